"""Where run directories live: a local (or shared) folder, or a URI that pyarrow's file systems
know (s3://, gs://, file://, ...). Locations are plain strings; local ones stay as the user wrote them."""

import posixpath
import re
import uuid
from pathlib import Path
from typing import Optional

from .files import atomic_write


def _pafs():
    import pyarrow.fs  # only where a location is listed or is a URI: the import costs 30+ MB

    return pyarrow.fs


# pyarrow's file systems; s3 and gs need credentials where the job runs, file:// is a local path
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
_ALMOST_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")


def is_uri(location) -> bool:
    return "://" in str(location)


def problem(location) -> Optional[str]:
    """What is wrong with a location as a place for runs, or None: an unknown scheme, or a URI
    that lost a slash (s3:/bucket would otherwise be a local folder named 's3:')."""
    text = str(location)
    if is_uri(text):
        scheme = text.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            return f"unknown scheme {scheme[:20]!r} (known: {', '.join(SCHEMES)})"
        return None
    almost = _ALMOST_URI.match(text)
    if almost and almost.group(1).lower() in SCHEMES:
        return f"looks like a URI with one slash; did you mean {almost.group(1)}://{text[almost.end():][:40]}?"
    return None


def _fs(location):
    """(pyarrow file system, path in it)."""
    if is_uri(location):
        return _pafs().FileSystem.from_uri(str(location))
    return _pafs().LocalFileSystem(), str(Path(location).resolve())


def basename(location) -> str:
    """The last part of a location: a run directory's name."""
    return posixpath.basename(str(location).rstrip("/"))


def parent(location) -> str:
    """The folder a location is in."""
    if is_uri(location):
        return posixpath.dirname(str(location).rstrip("/"))
    return str(Path(location).parent)


def join(location, *names) -> str:
    if is_uri(location):
        return posixpath.join(str(location), *names)
    return str(Path(location, *names))


def write_bytes(location, data: bytes) -> None:
    if not is_uri(location):
        atomic_write(Path(location), data)  # readers never see half a file
        return
    fs, path = _fs(location)
    with fs.open_output_stream(path) as f:  # an object store replaces the object whole
        f.write(data)


def read_bytes(location) -> bytes:
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = _fs(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def remove(location) -> None:
    """Delete a file if it is there."""
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = _fs(location)
    if fs.get_file_info(path).type == _pafs().FileType.File:
        fs.delete_file(path)


def exists(location) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    fs, path = _fs(location)
    return fs.get_file_info(path).type != _pafs().FileType.NotFound


def is_dir(location) -> bool:
    if not is_uri(location):
        return Path(location).is_dir()
    fs, path = _fs(location)
    return fs.get_file_info(path).type == _pafs().FileType.Directory


def make_new_dir(location) -> bool:
    """Create the folder; False if it was there already (atomic on a local or shared file system)."""
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        try:
            Path(location).mkdir()
            return True
        except FileExistsError:
            return False
    # an object store has no atomic "create if absent" for folders: each claimant writes its own claim,
    # then lists them; whoever sees a claim besides its own moves on (at most one keeps the name, and
    # where two race, possibly neither)
    fs, path = _fs(location)
    if fs.get_file_info(path).type != _pafs().FileType.NotFound:
        return False
    claims = posixpath.join(path, ".claims")
    fs.create_dir(claims, recursive=True)
    with fs.open_output_stream(posixpath.join(claims, uuid.uuid4().hex)) as f:
        f.write(b"")
    return len(fs.get_file_info(_pafs().FileSelector(claims))) == 1


def folders_holding(root, name: str) -> list[str]:
    """Every folder at or below root that holds a file called `name`, as locations, sorted."""
    fs, path = _fs(root)
    pafs = _pafs()
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    found = [posixpath.dirname(i.path) for i in infos
             if i.type == pafs.FileType.File and posixpath.basename(i.path) == name]
    return sorted(join(root, posixpath.relpath(p, path)) if p != path else str(root) for p in found)


def relative(location, root) -> str:
    """location's path below root, e.g. compare_abc/model_a; root's own name if they are the same."""
    path, base = (str(location), str(root)) if is_uri(location) else (str(Path(location).resolve()),
                                                                       str(Path(root).resolve()))
    rel = posixpath.relpath(path, base)
    return posixpath.basename(path.rstrip("/")) if rel == "." else rel
