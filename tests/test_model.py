"""The model: the tutorial's parameters, every cell, logits of the right shape."""

import pytest
import torch

from rnn_mnist.model import RNNModel, count_params

# nn.RNN's parameters in the tutorial's models, layer by layer, then the readout (from the tutorial's own printout)
TUTORIAL_SHAPES_A = [[100, 28], [100, 100], [100], [100], [10, 100], [10]]
TUTORIAL_SHAPES_BC = [[100, 28], [100, 100], [100], [100], [100, 100], [100, 100], [100], [100], [10, 100], [10]]


def shapes(model):
    return [list(p.shape) for p in model.parameters()]


def test_model_a_has_the_tutorials_parameters():
    model = RNNModel(28, 100, 1, 10, nonlinearity="relu")
    assert shapes(model) == TUTORIAL_SHAPES_A and count_params(model) == 14_010


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_models_b_and_c_have_the_tutorials_parameters(nonlinearity):
    model = RNNModel(28, 100, 2, 10, nonlinearity=nonlinearity)
    assert shapes(model) == TUTORIAL_SHAPES_BC and count_params(model) == 34_210


def test_the_nonlinearity_reaches_the_rnn_layer():
    assert RNNModel(28, 100, 1, 10, nonlinearity="relu").rnn.nonlinearity == "relu"
    assert RNNModel(28, 100, 2, 10, nonlinearity="tanh").rnn.nonlinearity == "tanh"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_maps_rows_to_ten_logits(cell):
    model = RNNModel(28, 32, 2, 10, cell=cell)
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)


def test_lstm_and_gru_have_four_and_three_gates():
    assert shapes(RNNModel(28, 100, 1, 10, cell="lstm"))[0] == [400, 28]
    assert shapes(RNNModel(28, 100, 1, 10, cell="gru"))[0] == [300, 28]


def test_the_readout_sees_only_the_last_row():
    torch.manual_seed(0)
    model = RNNModel(28, 16, 1, 10)
    x = torch.rand(3, 28, 28)
    out, _ = model.rnn(x)
    assert torch.equal(model(x), model.fc(out[:, -1, :]))
