"""Writing files so that a reader, a second writer or a crash never sees half of one."""

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    # read once, while this module is imported: setting the umask to read it back is process-wide,
    # and another thread could create a file in between
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def atomic_write(path, data: bytes) -> None:
    """Write under a temporary name in the same folder, flush it to the disk, then rename into place:
    a reader sees the old file or the new one, and a crash leaves one of them whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself, on the disk
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a file system that cannot open folders: the rename stands as the OS keeps it
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)
