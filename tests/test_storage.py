"""Run directory locations: local folders and URIs (pyarrow's file systems): file://, and s3:// on a real S3
server on 127.0.0.1 (tests/test_s3.py runs every command against it)."""

import pytest

from rnn_mnist import rundir, storage
from tests.helpers import invoke


@pytest.fixture(params=["folder", "uri", "s3", "s3-uri-options"])
def root(request, tmp_path, monkeypatch):
    if request.param == "s3":
        return request.getfixturevalue("s3")
    if request.param == "s3-uri-options":  # the endpoint in pyarrow's URI options instead of AWS_ENDPOINT_URL
        prefix, server = request.getfixturevalue("s3"), request.getfixturevalue("s3_server")
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        return f"{prefix}?endpoint_override={server['endpoint'].split('://')[1]}&scheme=http"
    return str(tmp_path) if request.param == "folder" else f"file://{tmp_path}"


def test_written_bytes_read_back_whole(root):
    place = storage.join(root, "a.txt")
    storage.write_bytes(place, b"hello")
    assert storage.read_bytes(place) == b"hello" and storage.exists(place) and not storage.is_dir(place)


def test_a_new_folder_is_made_once(root):
    place = storage.join(root, "runs", "job")
    assert storage.make_new_dir(place) is True and storage.make_new_dir(place) is False and storage.is_dir(place)


def test_folders_holding_a_file_are_found_at_any_depth(root):
    for where, name in (("a", "config.yaml"), ("b/c", "config.yaml"), ("d", "other.txt")):
        storage.make_new_dir(storage.join(root, where))
        storage.write_bytes(storage.join(root, where, name), b"x")
    found = storage.folders_holding(root, "config.yaml")
    assert [storage.relative(f, root) for f in found] == ["a", "b/c"]


def test_a_run_writes_its_directory_into_a_uri(job_file, tmp_path):
    result = invoke("run", job_file("remote"), "--set", f"output.storage=file://{tmp_path}/store")
    assert result.exit_code == 0, result.output
    run = f"file://{tmp_path}/store/remote"
    assert rundir.read_summary(run).status == "completed" and rundir.load_model(run)["iteration"] == 20
    table = invoke("results", f"file://{tmp_path}/store", "--format", "csv")
    assert table.exit_code == 0 and table.stdout.splitlines()[1].startswith("remote,rnn,tanh,1,16,")


@pytest.fixture(params=["uri", "s3"])
def store(request, tmp_path):
    return request.getfixturevalue("s3") if request.param == "s3" else f"file://{tmp_path}"


def test_racing_claims_on_an_object_store_give_a_name_to_one_run_at_most(store):
    import threading

    place = f"{store}/runs/job"
    start, won = threading.Barrier(12), []

    def claim():
        start.wait()
        won.append(storage.make_new_dir(place))

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) <= 1


def test_runs_racing_on_an_object_store_get_different_directories(store):
    import threading

    start, made = threading.Barrier(8), []

    def create():
        start.wait()
        made.append(rundir.create(f"{store}/runs", "job"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8
