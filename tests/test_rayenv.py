"""The settings rnnjob gives Ray before importing it (rayenv.configure), by where the cluster is: each in a
fresh interpreter, as a command starts."""

import json
import subprocess
import sys

import pytest

from tests.helpers import clean_env

NAMES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_USAGE_STATS_ENABLED",
         "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_gcs_rpc_server_reconnect_timeout_s")


def settings(**env) -> dict:
    code = ("import json, os; from rnn_mnist import rayenv; rayenv.configure(); "
            f"print(json.dumps({{n: os.environ.get(n) for n in {NAMES}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=clean_env(**env))
    return json.loads(done.stdout)


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379", "localhost:6379"])
def test_one_machine_stays_on_loopback_without_a_preemption_watcher(address):
    got = settings(**({"RAY_ADDRESS": address} if address else {}))
    assert got == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                   "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                   "RAY_gcs_rpc_server_reconnect_timeout_s": "30"}


def test_a_cluster_elsewhere_keeps_rays_own_defaults_for_addresses_and_preemption():
    got = settings(RAY_ADDRESS="10.213.0.1:6379")
    assert got["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] is None and got["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] is None


def test_a_value_the_user_set_wins():
    got = settings(RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="2")
    assert got["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1" and got["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2"


@pytest.mark.slow  # a fresh interpreter importing Ray and torch: seconds
def test_importing_rnnjob_changes_nothing_in_the_environment():
    # Ray's own import sets a variable or two: rnnjob's modules, imported after it, set none
    code = ("import json, os; import ray, ray.train, ray.tune, ray.job_submission; before = dict(os.environ); "
            "import rnn_mnist.cli, rnn_mnist.runs, rnn_mnist.ray_train, rnn_mnist.grid, rnn_mnist.jobs_api; "
            "print(json.dumps(sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_auto_reads_the_address_ray_start_records_in_rays_temp_folder(tmp_path, monkeypatch):
    from rnn_mnist import rayenv

    # `ray start` with RAY_TMPDIR=T writes T/ray/ray_current_cluster (seen with Ray 2.60); without it, /tmp/ray/
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:46379\n")
    assert rayenv.gcs_address("auto") == "127.0.0.1:46379"
    monkeypatch.delenv("RAY_TMPDIR")
    assert str(rayenv.current_cluster()) == "/tmp/ray/ray_current_cluster"
