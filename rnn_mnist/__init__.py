"""rnnjob: recurrent networks on MNIST, read row by row, as training jobs."""

__version__ = "0.1.0"
