"""The cluster configs shipped in cluster/: valid by their own tools' schemas (offline), token
authentication on, and the fields rnnjob relies on."""

import gzip
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.conftest import ROOT

KUBERAY_CRD_ENV = "RNNJOB_KUBERAY_CRD"  # another ray.io_rayjobs.yaml to check against than tests/data's


def load(name):
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def test_aws_config_is_valid_by_rays_own_cluster_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load("aws.yaml"), schema)


def test_aws_config_starts_every_node_with_a_token_it_never_holds():
    config = load("aws.yaml")
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # copied to every node
    text = (ROOT / "cluster" / "aws.yaml").read_text()
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]", text)


def test_aws_config_keeps_the_dashboard_on_loopback_and_pins_ray():
    config = load("aws.yaml")
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in start and "--head" in start
    assert any("ray[default,train]==2.60.0" in c for c in config["setup_commands"])


def test_kuberay_job_turns_token_authentication_on():
    assert load("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def kuberay_schema() -> dict:
    """The RayJob v1 schema: KubeRay v1.7.0's, kept in tests/data (see its README), or the CRD file that
    RNNJOB_KUBERAY_CRD names."""
    crd = os.environ.get(KUBERAY_CRD_ENV)
    if crd:
        definition = yaml.safe_load(Path(crd).read_text())
        (version,) = [v for v in definition["spec"]["versions"] if v["name"] == "v1"]
        return version["schema"]["openAPIV3Schema"]
    with gzip.open(ROOT / "tests" / "data" / "kuberay-v1.7.0-rayjob-v1-schema.json.gz") as f:
        return json.load(f)


def test_kuberay_job_is_valid_by_kuberays_rayjob_schema():
    schema = kuberay_schema()
    job = load("kuberay-rayjob.yaml")
    jsonschema.validate(job, schema)
    # the schema does not forbid unknown fields (Kubernetes prunes them): check that every field is known
    assert unknown_fields(job, schema) == []
    # and it is a real check: a mode KubeRay does not know, or a misspelt field, is caught
    job["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, schema)
    job["spec"]["rayClusterSpec"]["authOptions"] = {"mdoe": "token"}
    assert unknown_fields(job, schema) == [".spec.rayClusterSpec.authOptions.mdoe"]


def unknown_fields(value, schema, path="") -> list:
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                if not schema.get("x-kubernetes-preserve-unknown-fields"):
                    found.append(f"{path}.{key}")
                continue
            found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [f for i, item in enumerate(value) for f in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def test_kuberay_job_runs_model_c_on_two_gpu_workers():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    # no --address: the driver joins through the RAY_ADDRESS that Ray's job supervisor sets
    assert job["spec"]["entrypoint"].startswith("rnnjob submit jobs/model_c.yaml --workers 2 --gpu ")
    assert "--address" not in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert workers["replicas"] == 2 and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_the_kuberay_entrypoint_is_a_valid_rnnjob_command():
    from rnn_mnist import spec as specs

    words = load("kuberay-rayjob.yaml")["spec"]["entrypoint"].split()
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    loaded = specs.load(ROOT / words[2], sets + ["scaling.workers=2", "scaling.gpu=true"])
    assert loaded.output.storage and loaded.output.storage.startswith("s3://")
