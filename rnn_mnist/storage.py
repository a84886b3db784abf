"""Where run directories live: a local (or shared) folder, or a URI that pyarrow's file systems
know (s3://, gs://, file://, ...). Locations are plain strings; local ones stay as the user wrote them.

An s3:// location takes its endpoint and credentials the standard way: AWS_ENDPOINT_URL (any S3-compatible
store), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, an instance role or service account;
pyarrow's URI options (`?endpoint_override=...&region=...`) work too. A store that cannot be reached or
refuses a request is one line (StoreError) naming the location, never pyarrow's traceback."""

import contextlib
import functools
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlencode

from .errors import BadInput, RunFailed
from .files import atomic_write


def _pafs():
    import pyarrow.fs  # only where a location is listed or is a URI: the import costs 30+ MB

    return pyarrow.fs


# pyarrow's file systems; s3 and gs need credentials where the job runs, file:// is a local path
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
BUCKETS = ("s3", "gs", "gcs")  # object stores whose first path part is a bucket
_ALMOST_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")


def is_uri(location) -> bool:
    return "://" in str(location)


def problem(location) -> Optional[str]:
    """What is wrong with a location as a place for runs, or None: an unknown scheme, or a URI
    that lost a slash (s3:/bucket would otherwise be a local folder named 's3:')."""
    text = str(location)
    if is_uri(text):
        scheme, rest = text.split("://", 1)
        if scheme.lower() not in SCHEMES:
            return f"unknown scheme {scheme.lower()[:20]!r} (known: {', '.join(SCHEMES)})"
        if "@" in rest.split("/", 1)[0]:  # s3://KEY:SECRET@bucket: the keys would be in files and lines
            return ("credentials in the URI are refused (they would be written into the run's files); give them "
                    "the standard ways: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role")
        return None
    almost = _ALMOST_URI.match(text)
    if almost and almost.group(1).lower() in SCHEMES:
        return f"looks like a URI with one slash; did you mean {almost.group(1)}://{text[almost.end():][:40]}?"
    return None


class StoreError(RunFailed):
    """An object store could not be reached or refused a request (exit 1); the message names the location."""


ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # as boto3 and the AWS CLI read them, first first


def endpoint() -> str:
    """The S3 endpoint the standard variables name, or ""."""
    return next((os.environ[name].strip() for name in ENDPOINT_ENVS if os.environ.get(name, "").strip()), "")


def _with_endpoint(uri: str) -> str:
    """An s3:// URI with AWS_ENDPOINT_URL as its endpoint_override (and scheme), unless the URI names its
    own: every pyarrow version then reaches the same store, and so does Ray Train, which gets the URI."""
    endpoint_url = endpoint()
    base, query = _options(uri)
    options = parse_qs(query.lstrip("?"))
    if not endpoint_url or not base.lower().startswith("s3://") or "endpoint_override" in options:
        return uri
    scheme, _, host = endpoint_url.rstrip("/").rpartition("://")
    options["endpoint_override"] = [host or endpoint_url]
    if scheme in ("http", "https") and "scheme" not in options:
        options["scheme"] = [scheme]
    return f"{base}?{urlencode(options, doseq=True, safe=':')}"


def _reason(error: Exception) -> str:
    """pyarrow's message in one line, said plainly where the AWS SDK names the cause."""
    text = " ".join(str(error).split())
    for noise in (" No response body.", "; Details:"):
        text = text.split(noise)[0]
    text = text.rstrip(": ")
    if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return ("the store refused the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                f"or the node's role): {text[:200]}")
    if "NETWORK_CONNECTION" in text:
        where = endpoint() or "its endpoint"
        return f"cannot reach the store at {where}: {text[:200]}"
    return text[:300]


@contextlib.contextmanager
def _talking_to(location):
    """Turn what a URI's file system raises into one StoreError line naming the location."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, ValueError) as e:  # pyarrow's IOError and ArrowInvalid (a malformed URI)
        if not is_uri(location):
            raise
        raise StoreError(f"{location}: {_reason(e)}") from None


def _on_store(fn):
    """For the functions below that take a location first: errors of a URI's store are one line."""

    @functools.wraps(fn)
    def wrapped(location, *args, **kwargs):
        with _talking_to(location):
            return fn(location, *args, **kwargs)

    return wrapped


def _fs(location):
    """(pyarrow file system, path in it)."""
    if is_uri(location):
        return _pafs().FileSystem.from_uri(_with_endpoint(str(location)))
    return _pafs().LocalFileSystem(), str(Path(location).resolve())


def for_ray(location):
    """The storage path to hand Ray Train and Tune for a location (an s3:// URI with its endpoint)."""
    return _with_endpoint(str(location)) if is_uri(location) else location


def check(location) -> None:
    """Refuse, before anything is made, a URI whose store cannot take runs: its bucket missing, the store
    unreachable, the credentials refused (BadInput, one line). Local folders: see rundir.check_place."""
    if not is_uri(location):
        return
    bucket, missing = None, False
    try:
        with _talking_to(location):
            fs, path = _fs(location)
            if str(location).split("://", 1)[0].lower() in BUCKETS:
                bucket = path.split("/", 1)[0]
                missing = fs.get_file_info(bucket).type == _pafs().FileType.NotFound
                if not missing:
                    fs.get_file_info(path)  # a request the credentials must pass
    except StoreError as e:
        raise BadInput(f"output.storage: {e}") from None
    if missing:
        raise BadInput(f"output.storage: {location}: no bucket {bucket!r} there"
                       + (f" (at {endpoint()})" if endpoint() else ""))


def _options(location) -> tuple[str, str]:
    """(a URI without its options, "?options" or ""): paths are built on the first, the options kept."""
    base, mark, query = str(location).partition("?")
    return base, mark + query


def basename(location) -> str:
    """The last part of a location: a run directory's name."""
    return posixpath.basename(_options(location)[0].rstrip("/"))


def parent(location) -> str:
    """The folder a location is in."""
    if is_uri(location):
        base, query = _options(location)
        return posixpath.dirname(base.rstrip("/")) + query
    return str(Path(location).parent)


def join(location, *names) -> str:
    if is_uri(location):
        base, query = _options(location)
        return posixpath.join(base, *names) + query
    return str(Path(location, *names))


@_on_store
def write_bytes(location, data: bytes) -> None:
    if not is_uri(location):
        atomic_write(Path(location), data)  # readers never see half a file
        return
    fs, path = _fs(location)
    with fs.open_output_stream(path) as f:  # an object store replaces the object whole
        f.write(data)


@_on_store
def read_bytes(location) -> bytes:
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = _fs(location)
    with fs.open_input_stream(path) as f:
        return f.read()


@_on_store
def remove(location) -> None:
    """Delete a file if it is there."""
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = _fs(location)
    if fs.get_file_info(path).type == _pafs().FileType.File:
        fs.delete_file(path)


@_on_store
def exists(location) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    fs, path = _fs(location)
    return fs.get_file_info(path).type != _pafs().FileType.NotFound


@_on_store
def is_dir(location) -> bool:
    if not is_uri(location):
        return Path(location).is_dir()
    fs, path = _fs(location)
    return fs.get_file_info(path).type == _pafs().FileType.Directory


@_on_store
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


@_on_store
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
    path, base = ((_options(location)[0], _options(root)[0]) if is_uri(location)
                  else (str(Path(location).resolve()), str(Path(root).resolve())))
    rel = posixpath.relpath(path, base)
    return posixpath.basename(path.rstrip("/")) if rel == "." else rel
