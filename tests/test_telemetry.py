"""What a job publishes while it trains: TensorBoard event files and progress.json in its run directory
(real runs, read back with TensorBoard's own reader), and Ray's metrics on a real `ray start --head`,
scraped from the node's endpoint and through a real Prometheus started by cluster/monitor.sh."""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from rnn_mnist import rundir, telemetry
from tests.helpers import (
    ROOT,
    clean_env,
    free_port,
    invoke,
    job_text,
    pgroups_alive,
    rnnjob,
    scalars,
)

METRICS = ("ray_rnnjob_iteration", "ray_rnnjob_train_loss", "ray_rnnjob_test_accuracy",
           "ray_rnnjob_samples_per_second", "ray_rnnjob_seconds_per_step")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, mnist_root):
    out = tmp_path_factory.mktemp("runs")
    job = out / "watched.yaml"
    job.write_text(job_text(mnist_root, out, "watched", iters=60, eval_every=20))
    assert invoke("run", job, "--device", "cpu").exit_code == 0
    return out / "watched"


def test_tensorboard_shows_the_same_evaluations_as_metrics_jsonl(local_run):
    found = scalars(local_run)
    metrics = rundir.read_metrics(local_run)
    assert [(step, round(value, 4)) for step, value in found["test/accuracy"]] == \
        [(m["iteration"], round(m["accuracy"], 4)) for m in metrics]
    assert [step for step, _ in found["test/loss_at_evaluation"]] == [20, 40, 60]


def test_tensorboard_has_the_loss_rate_and_speed_every_ten_steps(local_run):
    found = scalars(local_run)
    for tag in ("train/loss", "train/lr", "train/samples_per_second", "train/seconds_per_step"):
        assert [step for step, _ in found[tag]] == list(range(10, 61, 10)), tag
    assert all(value == pytest.approx(0.1) for _, value in found["train/lr"])
    assert all(value > 0 for _, value in found["train/samples_per_second"])


def test_progress_json_holds_where_the_run_ended(local_run):
    progress = telemetry.read_progress(local_run)
    summary = rundir.read_summary(local_run)
    assert progress["iteration"] == progress["iters"] == 60
    assert progress["accuracy"] == summary.final_accuracy and progress["samples_per_second"] > 0


def test_a_grid_trial_gets_its_hyperparameters_for_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    telemetry.write_hparams(str(tmp_path), {"train.lr": 0.1, "model.cell": "gru"}, 91.5, 92.0)
    events = EventAccumulator(str(tmp_path / "hparams")).Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.lr"].number_value == pytest.approx(0.1)
    assert start.hparams["model.cell"].string_value == "gru"
    assert events.Scalars("hparam/final_accuracy")[0].value == pytest.approx(91.5)


# Ray's metrics, live: the session's real head (conftest), with a metrics endpoint of its own

def exported(text: str, name: str) -> dict:
    """{labels: value} of one metric in Prometheus's text format."""
    found = {}
    for labels, value in re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.M):
        found[tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
    return found


def for_run(values: dict, run: str) -> dict:
    return {labels: v for labels, v in values.items() if ("run", run) in labels}


@pytest.fixture(scope="module")
def monitor(head, tmp_path_factory):
    """Prometheus from cluster/monitor.sh, scraping the head, started before the job runs: Ray stops exporting a
    worker's metrics 120 s after its last report (RAY_WORKER_TIMEOUT_S), and installing Prometheus can take
    longer. None, with why, where it cannot be installed."""
    state = tmp_path_factory.mktemp("monitor")
    settings = {"RNNJOB_MONITOR_STATE": str(state), "RAY_TMPDIR": head["tmpdir"]}  # the head's scrape targets
    port = free_port()
    up = subprocess.run([ROOT / "cluster" / "monitor.sh", "up", "--port", str(port)], capture_output=True,
                        text=True, timeout=600, env=clean_env(**settings))
    if up.returncode != 0 and ("could not install" in up.stderr or "no prometheus binary" in up.stderr):
        yield None, f"Prometheus cannot be installed here: {up.stderr.strip()}"
        return
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Prometheus up: http://127.0.0.1:{port}" in up.stdout
    pid = int((state / "pid").read_text())
    yield f"http://127.0.0.1:{port}", None
    down = subprocess.run([ROOT / "cluster" / "monitor.sh", "down"], capture_output=True, text=True, timeout=60,
                          env=clean_env(**settings))
    assert down.returncode == 0 and down.stdout.strip() == "Prometheus down"
    assert pgroups_alive([pid]) == []


@pytest.fixture(scope="module")
def ray_job(head, monitor, tmp_path_factory, mnist_root):
    """A 2-worker job on the head, run to its end (with Prometheus scraping, where it could be installed)."""
    out = tmp_path_factory.mktemp("runs")
    job = out / "live.yaml"
    job.write_text(job_text(mnist_root, out, "live", iters=200, eval_every=50))
    done = rnnjob("submit", job, "--address", head["gcs"], "--workers", 2)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"run": "live", "accuracy": rundir.read_metrics(out / "live")[-1]["accuracy"]}


def poll(read, check, timeout=60.0):
    """read() until check(value) holds (Ray exports metrics every few seconds), or the last value."""
    deadline, value = time.time() + timeout, None
    while time.time() < deadline:
        value = read()
        if check(value):
            break
        time.sleep(2)
    return value


@pytest.mark.slow
def test_the_nodes_metrics_endpoint_shows_the_runs_last_accuracy(head, ray_job):
    def read():
        return urllib.request.urlopen(head["metrics"], timeout=10).read().decode()

    def accuracy(text):
        return for_run(exported(text, "ray_rnnjob_test_accuracy"), ray_job["run"])

    text = poll(read, lambda t: list(accuracy(t).values()) == [ray_job["accuracy"]])
    assert list(accuracy(text).values()) == [ray_job["accuracy"]]
    assert list(for_run(exported(text, "ray_rnnjob_iteration"), ray_job["run"]).values()) == [200]
    ranks = {dict(labels)["rank"] for labels in for_run(exported(text, "ray_rnnjob_samples_per_second"),
                                                        ray_job["run"])}
    assert ranks == {"0", "1"}  # per rank
    assert set(for_run(exported(text, "ray_rnnjob_seconds_per_step"), ray_job["run"]))


@pytest.fixture(scope="module")
def prometheus(monitor):
    url, why_not = monitor
    if url is None:
        pytest.skip(why_not)
    return url


def query(prometheus: str, expr: str) -> list:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]


@pytest.fixture(scope="module")
def seen_by_prometheus(prometheus, ray_job) -> dict:
    """The rnnjob metrics Prometheus holds for the job's run: name -> [(labels, value)]."""
    def read():
        return {name: [(r["metric"], float(r["value"][1]))
                       for r in query(prometheus, f'{name}{{run="{ray_job["run"]}"}}')] for name in METRICS}

    return poll(read, lambda seen: all(seen.values()) and
                [v for _, v in seen["ray_rnnjob_test_accuracy"]] == [ray_job["accuracy"]], timeout=90)


@pytest.mark.slow
def test_prometheus_returns_the_runs_accuracy_through_its_query_api(seen_by_prometheus, ray_job):
    assert [v for _, v in seen_by_prometheus["ray_rnnjob_test_accuracy"]] == [ray_job["accuracy"]]
    assert {labels["rank"] for labels, _ in seen_by_prometheus["ray_rnnjob_seconds_per_step"]} == {"0", "1"}


@pytest.mark.slow
def test_every_grafana_query_names_a_metric_prometheus_saw(seen_by_prometheus):
    dashboard = json.loads((ROOT / "cluster" / "grafana" / "rnnjob-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    named = {name for q in queries for name in re.findall(r"\b(ray_\w+)", q)}
    assert named and named <= {name for name, found in seen_by_prometheus.items() if found}


def test_monitor_refuses_a_state_folder_it_does_not_own(tmp_path):
    foreign = tmp_path / "state"
    foreign.mkdir()
    shutil.chown(foreign, user=65534)  # nobody's
    done = subprocess.run([ROOT / "cluster" / "monitor.sh", "up", "--port", str(free_port())], capture_output=True,
                          text=True, timeout=60, env=clean_env(RNNJOB_MONITOR_STATE=str(foreign)))
    assert done.returncode == 1 and "is not a folder of this user's" in done.stderr


def test_a_run_carried_on_from_a_checkpoint_has_each_step_once_in_tensorboard(tmp_path, mnist_root):
    import torch

    from rnn_mnist import loop
    from rnn_mnist.spec import DataSpec, JobSpec, ModelSpec, TrainSpec

    class StopAt(loop.Hooks):
        def after_step(self, iteration):
            if iteration > 35:  # after the tick at 30, whose step comes after the checkpoint at 20
                raise KeyboardInterrupt

    spec = JobSpec(model=ModelSpec(hidden_dim=8), train=TrainSpec(iters=40, eval_every=20, lr=0.1),
                   data=DataSpec(root=str(mnist_root)))
    with pytest.raises(KeyboardInterrupt):
        loop.fit(spec, torch.device("cpu"), str(tmp_path), StopAt())
    loop.fit(spec, torch.device("cpu"), str(tmp_path), loop.Hooks(saved=rundir.load_model(tmp_path)))
    assert [step for step, _ in scalars(tmp_path)["train/loss"]] == [10, 20, 30, 40]
