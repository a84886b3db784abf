"""The cluster configs shipped in cluster/: valid by their own tools' schemas (offline), token
authentication on, and the fields rnnjob relies on."""

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement

from tests.helpers import ROOT

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
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # copied to every node
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


def pip_installs(command: str) -> list[str]:
    """The arguments of a `pip install` command line, its options left out."""
    words = shlex.split(command.replace("\\\n", " "))
    start = next(i for i, w in enumerate(words) if w == "install" and words[i - 1].endswith("pip")) + 1
    return [w for w in words[start:] if not w.startswith("-")]


@pytest.mark.slow  # builds the wheel
def test_cluster_nodes_install_rnnjob_with_the_dependencies_its_pyproject_declares_and_nothing_else(tmp_path):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_range,) = [Requirement(d) for d in declared if Requirement(d).name == "ray"]
    # the package as a node gets it: a wheel built from pyproject.toml, whose metadata lists exactly its dependencies
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path,
                    ROOT], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rnnjob-*.whl")
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert [r for r in required if "extra ==" not in r] == [str(Requirement(d)) for d in declared]

    def only_rnnjob_and_a_ray_pin(args, package):
        assert len(args) == 2 and args[0] == package, args
        pin = Requirement(args[1])
        assert pin.name == "ray" and pin.extras == ray_range.extras and str(pin.specifier) == f"=={ray.__version__}"
        assert ray.__version__ in ray_range.specifier

    # AWS: every node installs the wheel `make wheel` builds into dist/, mounted from there
    config = load("aws.yaml")
    (install,) = [c for c in config["setup_commands"] if "pip install" in c]
    only_rnnjob_and_a_ray_pin(pip_installs(install), "~/rnnjob-dist/rnnjob-*.whl")
    assert config["file_mounts"]["~/rnnjob-dist"] == "./dist"
    wheel_target = (ROOT / "Makefile").read_text().split("\nwheel:")[1].split("\n\n")[0]
    assert "--no-deps --no-build-isolation -w dist ." in wheel_target
    # KubeRay: the image of cluster/Dockerfile, which copies the project and installs it from its pyproject.toml
    docker = (ROOT / "cluster" / "Dockerfile").read_text()
    (run,) = [line[4:] for line in docker.splitlines() if line.startswith("RUN ") and "pip install" in line]
    only_rnnjob_and_a_ray_pin(pip_installs(run), "/app")
    assert "COPY --chown=ray:users pyproject.toml README.md /app/" in docker
    assert "COPY --chown=ray:users rnn_mnist /app/rnn_mnist" in docker
    job = load("kuberay-rayjob.yaml")
    images = {c["image"] for group in [job["spec"]["rayClusterSpec"]["headGroupSpec"],
                                       *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert images == {"my-registry/rnnjob:latest"}
    assert "docker build -f cluster/Dockerfile -t my-registry/rnnjob:latest ." in (
        ROOT / "cluster" / "kuberay-rayjob.yaml").read_text()
