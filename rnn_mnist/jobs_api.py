"""Remote clusters through Ray's Jobs API: submit, follow, list, status, stop, watch.

A submission sends rnnjob's own package and the job file (with the presets a grid names) up as
the job's working_dir, nothing else, and the entrypoint runs the very same `rnnjob submit` on the
cluster's head; that driver joins the cluster through the RAY_ADDRESS Ray's job supervisor gives it.
"""

import ipaddress
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import ray.exceptions
from ray.job_submission import JobStatus, JobSubmissionClient

from . import rayenv, rundir, storage
from . import spec as specs
from .errors import BadInput, RunFailed

PACKAGE = Path(__file__).resolve().parent  # what the cluster needs of rnnjob: its own source files
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
STOP_GRACE_S = 30  # between Ray's SIGTERM to a stopped job's driver and its SIGKILL
CLUSTER_HOME = "~/rnnjob"  # where a remote job's relative paths (data, runs) land on the head
FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
POLL_S = 1.0  # between looks at a job's log and status while following it
AGENT_WAIT_S = 30  # how long a submission waits for a just-started head's job agent
OUTPUT_KEY = "rnnjob_output"  # in a submitted job's metadata: where its runs go, as the cluster names it


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of an http(s) address, or BadInput saying what is wrong with it."""
    url = urlparse(address)
    host, _, port = url.netloc.rpartition("@")[2].rpartition(":")
    if ":" in host and not host.startswith("["):  # urlparse would read part of the address as the port
        raise BadInput(f"--address {specs.show(address)[1:-1]}: an IPv6 address goes in brackets: "
                       f"{url.scheme}://[{host}]:{port}")
    try:
        port = url.port
        if port is None:
            port = 443 if url.scheme == "https" else 80
        elif not 0 < port < 65536:
            raise ValueError(port)
    except ValueError:
        raise BadInput(f"--address {specs.show(address)[1:-1]}: the port is not a number from 1 to 65535") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BadInput(f"--address {specs.show(address)[1:-1]}: expected http://HOST:PORT or https://HOST:PORT")
    return url.hostname, port


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(address: str) -> JobSubmissionClient:
    """A client for the cluster's Jobs API, or one line saying why there is none (within seconds)."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise RunFailed(f"cannot reach a Ray dashboard at {address}: {e.strerror or e}") from None
    if address.startswith("http://") and not _loopback(host) and os.environ.get("RAY_AUTH_MODE") == "token":
        print(f"warning: the Ray token goes to {address} unencrypted; use https://, or an SSH tunnel to "
              "127.0.0.1 (ray dashboard, ssh -L)", file=sys.stderr)
    try:
        return JobSubmissionClient(address)
    except ray.exceptions.AuthenticationError:
        raise rayenv.token_rejected(address) from None
    except (ConnectionError, RuntimeError) as e:
        if "401" in str(e) or "uthenticat" in str(e):
            raise rayenv.token_rejected(address) from None
        raise RunFailed(f"the Jobs API at {address} did not answer: {str(e).splitlines()[0]}") from None


def stage(files: list[Path]) -> str:
    """A temporary working_dir holding exactly rnnjob's package (its .py files) and these job files
    (in jobs/): no environment, key, data, result or other file goes up."""
    folder = Path(tempfile.mkdtemp(prefix="rnnjob-upload-"))
    for source in PACKAGE.rglob("*.py"):
        target = folder / "rnn_mnist" / source.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (folder / "jobs").mkdir()
    for spec_file in files:
        shutil.copyfile(spec_file, folder / "jobs" / spec_file.name)
    return str(folder)


def entrypoint(command: str, target: str, args: list[str], python: str) -> str:
    """The command the head runs: the same rnnjob command, joining the cluster through RAY_ADDRESS."""
    return shlex.join([python, "-m", "rnn_mnist", command, target, *args])


def submit(address: str, job: Path, presets: list[Path], args: list[str], python: str, pip: list[str],
           output: str) -> str:
    """Send a job file up (with the presets a grid names) for `rnnjob submit` there; returns its id.
    output: where its runs go (the spec's output location; a relative one starts in CLUSTER_HOME there)."""
    where = output if storage.is_uri(output) or output.startswith(("/", "~")) else f"{CLUSTER_HOME}/{output}"
    return _submit(address, "submit", f"jobs/{job.name}", [job, *presets], args, python, pip, where)


def submit_command(address: str, command: str, target: str, args: list[str], python: str, pip: list[str]) -> str:
    """Run `rnnjob COMMAND TARGET ARGS` on the cluster (resume: TARGET is a run on shared storage)."""
    parent = target.rstrip("/").rsplit("/", 1)[0]
    return _submit(address, command, target, [], args, python, pip, parent)


def _submit(address, command, target, files, args, python, pip, output: str) -> str:
    # Ray's client logs each upload at INFO ("Uploading package ..."; its SDK modules set their own loggers
    # to INFO): not the user's business; warnings stay
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = connect(address)
    folder = stage(files)
    try:
        env = {k: v for k, v in os.environ.items() if k.startswith("RNNJOB_")}
        # the job's working_dir is temporary: its relative paths (data, runs) start in CLUSTER_HOME
        env[specs.HOME_ENV] = CLUSTER_HOME
        # `rnnjob stop`: Ray's job supervisor sends SIGTERM, then SIGKILL after this many seconds (3 by
        # default); the driver needs up to ray_train.STOP_WAIT_S to end its workers and write the summary
        env["RAY_JOB_STOP_WAIT_TIME_S"] = str(STOP_GRACE_S)
        # the id, chosen here, goes to the driver too: it records by it where its run went (rundir.SUBMISSIONS),
        # below the output folder that the job's metadata names, for `rnnjob watch ID`
        job_id = f"raysubmit_{secrets.token_hex(8)}"
        env[rundir.SUBMISSION_ENV] = job_id
        runtime_env = {"working_dir": folder, "env_vars": env}
        if pip:
            runtime_env["pip"] = pip
        deadline = time.time() + AGENT_WAIT_S
        while True:
            try:
                return client.submit_job(entrypoint=entrypoint(command, target, args, python), runtime_env=runtime_env,
                                         submission_id=job_id, metadata={OUTPUT_KEY: output})
            except RuntimeError as e:
                # a head that has just started takes a few seconds before its job agent takes submissions;
                # Ray's own answer says to try again later
                if "No available agent" not in str(e) or time.time() > deadline:
                    raise RunFailed(f"the Jobs API at {address} refused the job: {str(e).splitlines()[0]}") from None
                time.sleep(1)
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
    """Print the job's log as it grows until the job ends, then its last lines; returns its final status.

    It polls the whole log rather than holding one stream open: a stream of Ray's log tail can end
    early or lose the last line (ray-project/ray#51601, #46413); a poll that fails is retried."""
    client, _ = _job(address, job_id)
    shown, state, failures = 0, None, 0
    while True:
        try:
            state = client.get_job_status(job_id)
            log = client.get_job_logs(job_id)
            failures = 0
        except (ConnectionError, RuntimeError, OSError) as e:  # the dashboard restarting, a dropped connection
            failures += 1
            if failures > 30:
                raise RunFailed(f"lost the Jobs API at {address}: {str(e).splitlines()[0]}") from None
            time.sleep(POLL_S)
            continue
        ended = state in FINISHED
        whole = log if ended else log[:log.rfind("\n") + 1]  # a line still being written waits
        if len(whole) > shown:
            echo(whole[shown:].rstrip("\n"))
            shown = len(whole)
        if ended:
            return state
        time.sleep(POLL_S)


def why_failed(address: str, job_id: str) -> Optional[str]:
    """The cause of a failed job where its log names one that the user can fix from here."""
    client, _ = _job(address, job_id)
    missing = re.findall(r"ModuleNotFoundError: No module named '([\w.]+)'", client.get_job_logs(job_id))
    if missing:
        return (f"the cluster's python has no module {missing[-1]!r}; name an interpreter there that has rnnjob's "
                "dependencies (--python /path/to/python) or have Ray install them for the job "
                "(--pip torch --pip typer ...)")
    return None


def wait(client: JobSubmissionClient, job_id: str, timeout: float) -> JobStatus:
    deadline = time.time() + timeout
    state = client.get_job_status(job_id)
    while state not in FINISHED and time.time() < deadline:
        time.sleep(0.5)
        state = client.get_job_status(job_id)
    return state


ENDED_AS = {JobStatus.SUCCEEDED: rundir.Status.COMPLETED, JobStatus.FAILED: rundir.Status.FAILED,
            JobStatus.STOPPED: rundir.Status.INTERRUPTED}


def watched(address: str, job_id: str) -> Callable[[], tuple[Optional[str], JobStatus]]:
    """For `rnnjob watch ID`: a function returning (the job's run or grid directory where this machine reaches
    it, else None; the job's status). The directory comes from the record its driver left by the job's id
    (rundir.read_submission) below the output folder that the job's metadata names: shared storage, a URI, or
    the cluster's own disk when it runs on this machine."""
    client, info = _job(address, job_id)
    output = (info.metadata or {}).get(OUTPUT_KEY)

    def look():
        state = client.get_job_status(job_id)
        run = rundir.read_submission(os.path.expanduser(output), job_id) if output else None
        return (run if run and storage.exists(run) else None), state

    return look


def logs(address: str, job_id: str) -> str:
    client, _ = _job(address, job_id)
    return client.get_job_logs(job_id)


def jobs(address: str) -> list:
    return sorted(connect(address).list_jobs(), key=lambda j: j.start_time or 0)


def stop(address: str, job_id: str) -> JobStatus:
    """Ask the job to stop and wait for it to end (its driver has STOP_GRACE_S); returns its status then."""
    client, _ = _job(address, job_id)
    client.stop_job(job_id)
    return wait(client, job_id, timeout=STOP_GRACE_S + 10)
