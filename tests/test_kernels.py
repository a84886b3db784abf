"""rnnjob's own faster paths (rnn_mnist/kernels): the same numbers as torch's, chosen only by the switch."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from rnn_mnist import kernels
from rnn_mnist.kernels import cpu_rnn
from rnn_mnist.model import RNNModel


@pytest.mark.parametrize("nonlinearity,layers", [("tanh", 1), ("tanh", 2), ("relu", 2)])
def test_the_cpu_kernel_matches_nn_rnn_in_outputs_and_gradients(nonlinearity, layers):
    torch.manual_seed(1)
    theirs = RNNModel(28, 32, layers, 10, nonlinearity=nonlinearity)
    ours = cpu_rnn.CpuRNNModel(28, 32, layers, 10, nonlinearity=nonlinearity)
    ours.load_state_dict(theirs.state_dict())  # the same parameters, by name
    x, y = torch.rand(16, 28, 28), torch.randint(0, 10, (16,))

    def loss_and_grads(model):
        loss = nn.functional.cross_entropy(model(x), y)
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    (our_loss, our_grads), (torch_loss, torch_grads) = loss_and_grads(ours), loss_and_grads(theirs)
    assert torch.allclose(our_loss, torch_loss, atol=1e-6)
    for a, b in zip(our_grads, torch_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_the_cpu_kernel_passes_gradients_to_its_input():
    rnn = nn.RNN(28, 16, 1, batch_first=True)
    x = torch.rand(4, 28, 28, requires_grad=True)
    (ours,) = torch.autograd.grad(cpu_rnn.last_hidden(rnn, x).sum(), x)
    (theirs,) = torch.autograd.grad(rnn(x)[0][:, -1].sum(), x)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("cell,kernel,device,chosen", [
    ("rnn", "auto", "cpu", cpu_rnn.CpuRNNModel),
    ("rnn", "torch", "cpu", RNNModel),
    ("rnn", "auto", "cuda", RNNModel),
    ("lstm", "auto", "cpu", RNNModel),
    ("gru", "auto", "cpu", RNNModel),
])
def test_the_kernel_is_used_only_where_the_switch_allows_it(cell, kernel, device, chosen):
    assert kernels.model_class(cell, kernel, device) is chosen


MMAPPED_BYTES = """
import ctypes, sys, torch
from rnn_mnist.kernels import process

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    process.tune("cpu")
block = torch.empty(8 << 20, dtype=torch.uint8)  # a step's activations are blocks of this order
print(libc.mallinfo2().hblkhd)  # bytes glibc holds in mmapped blocks, which go back to the kernel on free
"""


def test_process_tuning_keeps_megabyte_blocks_in_the_heap():
    # glibc gives blocks this size their own mapping by default, returned on free and faulted in again at
    # the next step; tuned, they come from the heap and are reused
    mmapped = {mode: int(subprocess.run([sys.executable, "-c", MMAPPED_BYTES, mode], capture_output=True, text=True,
                                        check=True, timeout=120).stdout) for mode in ("tuned", "default")}
    assert mmapped["default"] >= 8 << 20 > mmapped["tuned"], mmapped


def test_process_tuning_sets_the_thread_count():
    done = subprocess.run([sys.executable, "-c", "import torch; from rnn_mnist.kernels import process; "
                           "process.tune('cpu', threads=1); print(torch.get_num_threads())"],
                          capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "1"
