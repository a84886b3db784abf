"""Faster paths of our own, each behind an explicit switch, each measured (benchmarks/README.md).

- `cpu_rnn`: the plain RNN's math for CPUs in fewer, larger operations; chosen by the job spec's
  `model.kernel` (auto: for the rnn cell on a CPU; torch: never). Same parameters as nn.RNN, so a
  model trained with it loads and runs anywhere without it.
- `process`: process-wide settings (threads, glibc's allocator), applied once where a training
  process starts (`rnnjob run`, each Ray Train worker).
"""

from ..model import RNNModel
from .cpu_rnn import CpuRNNModel


def model_class(cell: str, kernel: str, device_type: str) -> type:
    """The model class that computes `cell` on `device_type` under the `model.kernel` switch."""
    if kernel == "auto" and cell == "rnn" and device_type == "cpu":
        return CpuRNNModel
    return RNNModel
