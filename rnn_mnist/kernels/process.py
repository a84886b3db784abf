"""Process-wide settings for a training process, in one place: called once where one starts."""

import ctypes
from typing import Optional

import torch


def tune(device_type: str, threads: Optional[int] = None) -> None:
    """Threads for torch (a Ray worker gets as many as the CPUs it was given: no oversubscription),
    and, on a CPU, an allocator that keeps freed blocks."""
    if threads:
        torch.set_num_threads(threads)
    if device_type == "cpu":
        keep_freed_memory()


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks for reuse instead of handing them back to the kernel.

    Every CPU step allocates and frees the same megabyte-sized tensors. By default glibc returns
    blocks of that size to the kernel on free, and each new one faults its pages in again: about a
    tenth of a step's time here. Fixed thresholds keep them in the heap (about 15 MB more at the peak).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
