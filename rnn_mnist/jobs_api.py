"""Remote clusters through Ray's Jobs API: submit, follow, list, stop.

A submission sends the project and the job file up as the job's working_dir, and the entrypoint
runs the very same `rnnjob submit ... --address auto` on the cluster's head.
"""

import asyncio
import os
import shlex
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from . import rayenv  # (before ray: settings Ray reads at import)

import ray.exceptions  # noqa: E402
from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402

from . import spec as specs  # noqa: E402
from .errors import BadInput, RunFailed  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
# never uploaded: environments, history, data and results (the cluster fetches or writes its own)
EXCLUDED = {".venv", ".git", "data", "runs", "__pycache__", ".pytest_cache", "benchmarks/results"}
LIMIT = 512 * 1024 * 1024  # Ray's limit for one working_dir package (its gRPC message size)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
CLUSTER_HOME = "~/rnnjob"  # where a remote job's relative paths (data, runs) land on the head
FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def is_jobs_address(address: Optional[str]) -> bool:
    return bool(address) and address.startswith(("http://", "https://"))


def address_from_env() -> Optional[str]:
    """The Jobs API address that Ray's own CLI would use, if any."""
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        if is_jobs_address(os.environ.get(name)):
            return os.environ[name]
    return None


def connect(address: str) -> JobSubmissionClient:
    """A client for the cluster's Jobs API, or one line saying why there is none (within seconds)."""
    url = urlparse(address)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as e:
        raise RunFailed(f"cannot reach a Ray dashboard at {address}: {e.strerror or e}") from None
    try:
        return JobSubmissionClient(address)
    except ray.exceptions.AuthenticationError:
        raise rayenv.token_rejected(address) from None
    except (ConnectionError, RuntimeError) as e:
        if "401" in str(e) or "uthenticat" in str(e):
            raise rayenv.token_rejected(address) from None
        raise RunFailed(f"the Jobs API at {address} did not answer: {str(e).splitlines()[0]}") from None


def _ignore(root: Path):
    def ignore(folder, names):
        skipped = []
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel in EXCLUDED or name in EXCLUDED or (path.is_file() and path.stat().st_size >= LIMIT):
                skipped.append(name)
        return skipped
    return ignore


def stage(job: Path) -> tuple[str, str]:
    """A temporary working_dir: the project (less EXCLUDED) plus the job's folder of specs.

    Returns (the folder, the job file's path inside it). The job's folder goes along whole, so a
    grid's presets (job files beside it) travel with it.
    """
    folder = Path(tempfile.mkdtemp(prefix="rnnjob-upload-"))
    shutil.copytree(PROJECT, folder, ignore=_ignore(PROJECT), dirs_exist_ok=True)
    specs_dir = folder / ".rnnjob" / "job"
    specs_dir.mkdir(parents=True)
    for spec_file in job.resolve().parent.glob("*.y*ml"):
        shutil.copy(spec_file, specs_dir / spec_file.name)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size >= LIMIT:
        shutil.rmtree(folder)
        raise BadInput(f"{PROJECT}: {size / 2**20:.0f} MiB to upload without {', '.join(sorted(EXCLUDED))}, over "
                       f"Ray's {LIMIT // 2**20} MiB limit for a working_dir; move large files out of the project")
    return str(folder), f".rnnjob/job/{job.name}"


def entrypoint(job_in_stage: str, args: list[str], python: str) -> str:
    """The command the head runs: the same `rnnjob submit`, joining the cluster it runs on."""
    return shlex.join([python, "-m", "rnn_mnist", "submit", job_in_stage, "--address", "auto", *args])


def submit(address: str, job: Path, args: list[str], python: str, pip: list[str]) -> str:
    """Send the job up; returns its submission id."""
    client = connect(address)
    folder, job_in_stage = stage(job)
    try:
        env = {k: v for k, v in os.environ.items() if k.startswith("RNNJOB_")}
        # the job's working_dir is temporary: its relative paths (data, runs) start in CLUSTER_HOME
        env[specs.HOME_ENV] = CLUSTER_HOME
        runtime_env = {"working_dir": folder, "env_vars": env}
        if pip:
            runtime_env["pip"] = pip
        return client.submit_job(entrypoint=entrypoint(job_in_stage, args, python), runtime_env=runtime_env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # Ray has uploaded its own copy


def _job(address: str, job_id: str):
    """(a client, the job's info); an unknown id is one line."""
    client = connect(address)
    try:
        return client, client.get_job_info(job_id)
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise RunFailed(f"no job {job_id} on {address}") from None
        raise RunFailed(f"{address}: {str(e).splitlines()[0]}") from None


def status(address: str, job_id: str):
    return _job(address, job_id)[1]


def follow(address: str, job_id: str, echo) -> JobStatus:
    """Print the job's log as it grows until the job ends; returns its final status."""
    client, _ = _job(address, job_id)

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            echo(lines.rstrip("\n"))

    asyncio.run(tail())
    return wait(client, job_id, timeout=60)


def wait(client: JobSubmissionClient, job_id: str, timeout: float) -> JobStatus:
    deadline = time.time() + timeout
    state = client.get_job_status(job_id)
    while state not in FINISHED and time.time() < deadline:
        time.sleep(0.5)
        state = client.get_job_status(job_id)
    return state


def logs(address: str, job_id: str) -> str:
    client, _ = _job(address, job_id)
    return client.get_job_logs(job_id)


def jobs(address: str) -> list:
    return sorted(connect(address).list_jobs(), key=lambda j: j.start_time or 0)


def stop(address: str, job_id: str) -> JobStatus:
    """Ask the job to stop and wait (up to 30 s) for it to end; returns its status then."""
    client, _ = _job(address, job_id)
    client.stop_job(job_id)
    return wait(client, job_id, timeout=30)
