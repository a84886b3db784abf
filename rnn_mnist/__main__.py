"""`python -m rnn_mnist ...` is `rnnjob ...`: what a cluster runs where rnnjob is not installed."""

from .cli import entry

entry()
