"""The recurrent classifier: one image is 28 time steps of 28 pixels."""

from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNModel(nn.Module):
    """A stack of recurrent layers and a linear readout of the last time step.

    With cell="rnn" the parameters are exactly the tutorial's: per layer
    weight_ih, weight_hh, bias_ih, bias_hh, then the readout's weight and bias.
    The nonlinearity only applies to the plain rnn cell; lstm and gru have
    their own gates.
    """

    def __init__(self, input_dim, hidden_dim, layer_dim, output_dim, nonlinearity="tanh", cell="rnn"):
        super().__init__()
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](input_dim, hidden_dim, layer_dim, batch_first=True, **extra)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        # x: (batch, seq=28, input=28)
        return self.fc(self.last_hidden(x))  # (batch, output)

    def last_hidden(self, x):
        out, _ = self.rnn(x)  # (batch, seq, hidden); the hidden state starts at zero (torch's default)
        return out[:, -1, :]  # (batch, hidden): the top layer after the last row


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def param_count(cell: str, hidden_dim: int, layer_dim: int, input_dim: int = 28, output_dim: int = 10) -> int:
    """RNNModel's parameter count, without building one: per layer and gate, weight_ih, weight_hh and their
    two biases; then the readout."""
    per_layer = [GATES[cell] * hidden_dim * ((input_dim if layer == 0 else hidden_dim) + hidden_dim + 2)
                 for layer in range(layer_dim)]
    return sum(per_layer) + hidden_dim * output_dim + output_dim
