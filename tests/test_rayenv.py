"""The settings rnnjob gives Ray before importing it, by where the cluster is: each in a fresh
interpreter, as a command starts."""

import json
import subprocess
import sys

import pytest

from tests.conftest import clean_env

NAMES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_USAGE_STATS_ENABLED",
         "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")


def settings(**env) -> dict:
    code = ("import json, os; from rnn_mnist import rayenv; "
            f"print(json.dumps({{n: os.environ.get(n) for n in {NAMES}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=clean_env(**env))
    return json.loads(done.stdout)


@pytest.mark.parametrize("address", [None, "127.0.0.1:6379", "localhost:6379"])
def test_one_machine_stays_on_loopback_without_a_preemption_watcher(address):
    got = settings(**({"RAY_ADDRESS": address} if address else {}))
    assert got == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                   "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def test_a_cluster_elsewhere_keeps_rays_own_defaults_for_addresses_and_preemption():
    got = settings(RAY_ADDRESS="10.213.0.1:6379")
    assert got["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] is None and got["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] is None


def test_a_value_the_user_set_wins():
    got = settings(RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="2")
    assert got["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1" and got["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2"
