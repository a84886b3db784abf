import pytest
import torch
from torch import nn

from rnn_mnist import loop
from rnn_mnist.model import RNNModel, count_params
from rnn_mnist.spec import JobSpec, ModelSpec, TrainSpec

SEED_SHAPES_A = [[100, 28], [100, 100], [100], [100], [10, 100], [10]]
SEED_SHAPES_BC = [[100, 28], [100, 100], [100], [100], [100, 100], [100, 100], [100], [100], [10, 100], [10]]


def shapes(model):
    return [list(p.shape) for p in model.parameters()]


def test_model_a_parameters_are_the_seeds():
    model = RNNModel(28, 100, 1, 10, nonlinearity="relu")
    assert shapes(model) == SEED_SHAPES_A
    assert count_params(model) == 14_010


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_models_b_and_c_parameters_are_the_seeds(nonlinearity):
    model = RNNModel(28, 100, 2, 10, nonlinearity=nonlinearity)
    assert shapes(model) == SEED_SHAPES_BC
    assert count_params(model) == 34_210


def test_nonlinearity_reaches_the_rnn_layer():
    assert RNNModel(28, 100, 1, 10, nonlinearity="relu").rnn.nonlinearity == "relu"
    assert RNNModel(28, 100, 2, 10, nonlinearity="tanh").rnn.nonlinearity == "tanh"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_maps_rows_to_ten_logits(cell):
    model = RNNModel(28, 32, 2, 10, cell=cell)
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)


def test_lstm_and_gru_have_four_and_three_gates():
    assert shapes(RNNModel(28, 100, 1, 10, cell="lstm"))[0] == [400, 28]
    assert shapes(RNNModel(28, 100, 1, 10, cell="gru"))[0] == [300, 28]


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    spec = JobSpec(model=ModelSpec(layer_dim=2), train=TrainSpec(optimizer="adam", lr=0.01))
    model = loop.build_model(spec)
    optimizer = loop.build_optimizer(spec, model.parameters())
    images, labels = torch.rand(64, 28, 28), torch.randint(0, 10, (64,))
    losses = [loop.train_step(model, images, labels, nn.CrossEntropyLoss(), optimizer).item() for _ in range(100)]
    assert losses[-1] < 0.5 * losses[0]
