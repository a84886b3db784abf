"""The cluster configs shipped in cluster/: the fields rnnjob relies on."""

import yaml

from tests.conftest import ROOT


def load(name):
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def test_aws_config_has_a_cpu_head_and_gpu_workers():
    config = load("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert config["provider"]["type"] == "aws" and head["resources"].get("GPU", 0) == 0
    assert gpu and all(t["resources"]["GPU"] >= 1 for t in gpu)
    assert config["max_workers"] >= max(t["max_workers"] for t in gpu)


def test_aws_config_keeps_the_dashboard_on_loopback_and_pins_ray():
    config = load("aws.yaml")
    (start,) = [c for c in config["head_start_ray_commands"] if c.startswith("ray start")]
    assert "--dashboard-host=127.0.0.1" in start and "--head" in start
    assert any("ray[default,train]==2.60.0" in c for c in config["setup_commands"])


def test_kuberay_job_runs_model_c_on_two_gpu_workers():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("rnnjob submit jobs/model_c.yaml --workers 2 --gpu --address auto")
    cluster = job["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert workers["replicas"] == 2 and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert job["spec"]["submissionMode"] == "SidecarMode"  # the submitter reaches the dashboard on localhost


def test_the_kuberay_entrypoint_is_a_valid_rnnjob_command():
    from rnn_mnist import spec as specs

    job = load("kuberay-rayjob.yaml")
    words = job["spec"]["entrypoint"].split()
    spec_path = ROOT / words[2]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    loaded = specs.load(spec_path, sets + ["scaling.workers=2", "scaling.gpu=true"])
    assert loaded.output.storage and loaded.output.storage.startswith("s3://")
