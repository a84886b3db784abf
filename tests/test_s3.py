"""Run directories in an S3 bucket, end to end, as a user runs rnnjob against AWS: the standard AWS variables
pointing at a real S3 server on 127.0.0.1 (conftest's s3_server, moto's, which checks credentials)."""

import subprocess

import pytest

from rnn_mnist import rundir, storage
from tests.helpers import (
    RNNJOB,
    assert_one_line_error,
    clean_env,
    ctrl_c,
    evaluations,
    in_bucket,
    job_text,
    rnnjob,
    scalars,
    weights_equal,
)

pytestmark = pytest.mark.slow


def scalars_in_bucket(run, tmp_path) -> dict:
    """The scalars of a run's TensorBoard event files in the bucket, read by TensorBoard from a copy."""
    copy = tmp_path / "events"
    copy.mkdir()
    for name in in_bucket(run):
        if name.startswith("events.out.tfevents."):
            (copy / name).write_bytes(storage.read_bytes(storage.join(run, name)))
    return scalars(copy)


def test_a_run_stopped_and_resumed_from_another_process_in_the_bucket_equals_a_whole_local_one(
        s3, tmp_path, mnist_root):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(mnist_root, tmp_path / "runs", "tiny", iters=60, eval_every=10))
    assert rnnjob("run", job, "--device", "cpu", "--out", tmp_path / "whole").returncode == 0
    stopped, _ = ctrl_c(["run", job, "--device", "cpu", "--set", f"output.storage={s3}"], "Iteration: 30.")
    run = f"{s3}/tiny"
    assert stopped.returncode == 130 and rundir.read_summary(run).status == "interrupted", stopped.stdout
    resumed = rnnjob("resume", run, "--device", "cpu")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    whole = tmp_path / "whole" / "tiny"
    assert evaluations(run) == evaluations(whole)
    assert weights_equal(run, whole)
    summary = rundir.read_summary(run)
    assert summary.status == "completed" and summary.iterations == 60 and len(summary.resumes) == 1
    files = in_bucket(run)
    assert {"config.yaml", "metrics.jsonl", "progress.json", "summary.json", "model.pt"} <= files
    assert any(f.startswith("events.out.tfevents.") for f in files)
    accuracy = scalars_in_bucket(run, tmp_path)["test/accuracy"]  # each evaluation once, across both processes' files
    assert sorted((step, round(value, 4)) for step, value in accuracy) == \
        [(m["iteration"], round(m["accuracy"], 4)) for m in rundir.read_metrics(run)]

    # what reads runs takes the bucket's URIs
    table = rnnjob("results", s3, "--format", "csv")
    assert table.returncode == 0 and table.stdout.splitlines()[1].startswith("tiny,rnn,tanh,1,16,"), table.stderr
    plotted = rnnjob("plot", s3, "--output", tmp_path / "curves.png")
    assert plotted.returncode == 0 and (tmp_path / "curves.png").stat().st_size > 0, plotted.stderr
    watched = rnnjob("watch", run)
    assert watched.returncode == 0 and "tiny: completed, 60/60 iterations" in watched.stdout, watched.stderr
    evaluated = rnnjob("eval", run, "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {summary.final_accuracy:.2f}%" in evaluated.stdout


def test_a_grid_and_a_search_into_the_bucket(s3, tmp_path, mnist_root, head):
    grid = tmp_path / "grid.yaml"
    grid.write_text(job_text(mnist_root, tmp_path / "runs", "lrs", iters=40, eval_every=20)
                    + "grid:\n  train.lr: [0.05, 0.1]\n")
    done = rnnjob("submit", grid, "--set", f"output.storage={s3}", "--address", head["gcs"])
    assert done.returncode == 0, done.stdout + done.stderr
    for trial in ("lr=0.05", "lr=0.1"):
        assert rundir.read_summary(f"{s3}/lrs/{trial}").status == "completed"
        assert [m["iteration"] for m in rundir.read_metrics(f"{s3}/lrs/{trial}")] == [20, 40]
    assert rundir.is_grid(f"{s3}/lrs")
    search = tmp_path / "search.yaml"
    search.write_text(job_text(mnist_root, tmp_path / "runs", "drawn", iters=40, eval_every=20)
                      + "search:\n  num_samples: 2\n  space:\n    train.lr: {loguniform: [0.02, 0.2]}\n")
    done = rnnjob("submit", search, "--set", f"output.storage={s3}", "--address", head["gcs"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert rundir.is_search(f"{s3}/drawn") and "tune/tuner.pkl" in in_bucket(f"{s3}/drawn")
    table = rnnjob("results", f"{s3}/drawn", "--format", "csv")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3, table.stdout + table.stderr


def test_two_runs_started_at_once_with_one_name_get_two_directories(s3, tmp_path, mnist_root):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(mnist_root, tmp_path / "runs", "same", iters=20, eval_every=10))
    started = [subprocess.Popen([RNNJOB, "run", str(job), "--device", "cpu", "--set", f"output.storage={s3}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
               for _ in range(2)]
    for proc in started:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    names = {f.split("/")[0] for f in in_bucket(s3) if f.endswith("summary.json")}
    assert names == {"same", "same-2"}
    assert all(rundir.read_summary(f"{s3}/{name}").status == "completed" for name in names)


@pytest.fixture(scope="module")
def bucket_run(s3_server, tmp_path_factory, mnist_root) -> str:
    """A prefix of the bucket holding one small run (`tiny`), for what reads runs there."""
    import os

    folder = tmp_path_factory.mktemp("bucket-run")
    (folder / "job.yaml").write_text(job_text(mnist_root, folder / "runs", "tiny", iters=20, eval_every=10))
    prefix = f"{s3_server['bucket']}/readers-{os.getpid()}"
    done = rnnjob("run", folder / "job.yaml", "--device", "cpu", "--set", f"output.storage={prefix}",
                  **s3_server["env"])
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


@pytest.mark.parametrize("case", ["credentials", "bucket", "endpoint", "scheme", "keys-in-uri"])
def test_a_store_that_cannot_take_runs_is_one_line_and_nothing_is_made(case, s3, tmp_path, mnist_root, bucket_run):
    job = tmp_path / "job.yaml"
    job.write_text(job_text(mnist_root, tmp_path / "runs", "never", iters=20, eval_every=10))
    place, env, fragment = s3, {}, ""
    if case == "credentials":
        env, fragment = {"AWS_SECRET_ACCESS_KEY": "not-the-key"}, "the store refused the credentials"
    elif case == "bucket":
        place, fragment = "s3://no-such-bucket/runs", "no bucket 'no-such-bucket' there"
    elif case == "endpoint":
        from tests.helpers import free_port

        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
        fragment = "cannot reach the store at http://127.0.0.1:"
    elif case == "scheme":
        place, fragment = "s4://bucket/runs", "unknown scheme 's4'"
    else:
        place, fragment = f"s3://AKIA:secret@{s3[5:]}", "credentials in the URI are refused"
    # within seconds, not a long retry: the command is given a minute
    line = assert_one_line_error(rnnjob("run", job, "--device", "cpu", "--set", f"output.storage={place}",
                                        timeout=60, **env), 2)
    assert fragment in line and "secret" not in line, line
    assert in_bucket(s3) == set() and not (tmp_path / "runs").exists()
    if case in ("credentials", "endpoint"):  # what reads runs: one line too, exit 1
        readers = [["results", bucket_run], ["resume", f"{bucket_run}/tiny"]]
        if case == "credentials":  # each unreachable try waits out pyarrow's retries: two readers show it
            readers += [["watch", f"{bucket_run}/tiny"], ["eval", f"{bucket_run}/tiny"]]
        for args in readers:
            assert fragment in assert_one_line_error(rnnjob(*args, timeout=60, **env), 1), args


def test_make_s3_up_serves_a_bucket_that_rnnjob_runs_into_and_down_ends_it(tmp_path, mnist_root):
    from tests.helpers import ROOT, free_port, pgroups_alive

    state, port = tmp_path / "state", free_port()
    script = [ROOT / "cluster" / "s3.sh"]
    up = subprocess.run([*script, "up", "--port", str(port), "--bucket", "tried"], capture_output=True, text=True,
                        timeout=120, env=clean_env(RNNJOB_S3_STATE=str(state)))
    assert up.returncode == 0, up.stdout + up.stderr
    pid = int((state / "pid").read_text())
    try:
        exports = next(line for line in up.stdout.splitlines() if "export AWS_ENDPOINT_URL=" in line)
        env = dict(pair.split("=", 1) for pair in exports.split("export", 1)[1].split())
        assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        job = tmp_path / "job.yaml"
        job.write_text(job_text(mnist_root, tmp_path / "runs", "tried", iters=20, eval_every=10))
        done = rnnjob("run", job, "--device", "cpu", "--set", "output.storage=s3://tried/runs",
                      AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                      AWS_SHARED_CREDENTIALS_FILE="/dev/null", **env)
        assert done.returncode == 0 and "-> s3://tried/runs/tried" in done.stdout, done.stdout + done.stderr
    finally:
        down = subprocess.run([*script, "down"], capture_output=True, text=True, timeout=60,
                              env=clean_env(RNNJOB_S3_STATE=str(state)))
    assert down.returncode == 0 and "S3 server down" in down.stdout, down.stderr
    assert pgroups_alive([pid]) == []
