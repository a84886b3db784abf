"""Every job as a Ray Train job: one TorchTrainer whose workers call `loop.fit`.

The Ray touch points are the ones in Ray's own examples: prepare the model (DDP),
prepare the loader (a DistributedSampler), report metrics with a checkpoint, fit.
Everything else is the same loop that `rnnjob run` uses.
"""

import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start --head` records its address


def _gcs_address(address: str) -> Optional[str]:
    """host:port of the cluster named by a Ray address ('auto' means the one started on this machine)."""
    if address == "auto":
        try:
            return CURRENT_CLUSTER.read_text().strip() or None
        except OSError:
            return None
    return address.split("://")[-1]


def _on_loopback(address: Optional[str]) -> bool:
    if not address:
        return True  # an embedded Ray
    host = (_gcs_address(address) or "").rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Read by Ray when it is imported, so set here, before the import: never phone home, and keep an
# embedded Ray (or a driver joining a Ray on 127.0.0.1) on loopback. Ray otherwise advertises the
# machine's interface address even for a local ray.init, and mixed addresses stop workers starting.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if _on_loopback(os.environ.get("RAY_ADDRESS")):
    os.environ.setdefault(LOOPBACK_ENV, "0")
# Ray's client sends its token only in token mode, which a new local Ray turns on for itself but a
# process joining a cluster does not. Take the token where Ray's own CLI looks for it.
_TOKEN_FILE = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or _TOKEN_FILE.exists()):
    os.environ["RAY_AUTH_MODE"] = "token"

import ray  # noqa: E402
import ray.train  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from . import loop, rundir  # noqa: E402
from . import spec as specs  # noqa: E402
from .errors import BadInput, RunFailed  # noqa: E402

FAULT_ENV = "RNNJOB_FAULT"  # "RANK:ITERATION": that rank exits once when it reaches that iteration
FAULT_MARK = ".fault-injected"


class ClusterTooSmall(BadInput):
    """The job asks for more than the cluster has: Ray would wait for it forever."""


class TrainingFailed(RunFailed):
    """Ray Train gave up on the job (workers failed more than max_failures times)."""


@dataclass(frozen=True)
class Fault:
    rank: int
    iteration: int

    @classmethod
    def from_env(cls) -> Optional["Fault"]:
        """The fault-injection setting of this process (a documented testing aid), if any."""
        text = os.environ.get(FAULT_ENV, "")
        if not text:
            return None
        try:
            rank, iteration = (int(part) for part in text.split(":"))
        except ValueError:
            raise specs.SpecError(f"{FAULT_ENV}={text}: expected RANK:ITERATION, e.g. 1:150") from None
        return cls(rank, iteration)


class RayHooks(loop.Hooks):
    """The loop's view of a Ray Train worker."""

    def __init__(self, run: Path, fault: Optional[Fault]):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.run, self.fault = run, fault

    def prepare_model(self, model, device):
        return ray.train.torch.prepare_model(model)  # moves to the worker's device; DDP if several workers

    def prepare_loader(self, loader):
        # batches are moved by the loop itself; Ray only swaps in the DistributedSampler
        return ray.train.torch.prepare_data_loader(loader, move_to_device=False)

    def all_reduce(self, tensor):
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def resume(self):
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return rundir.load_model(Path(d) / rundir.MODEL)

    def after_step(self, iteration):
        fault = self.fault
        if fault and fault.rank == self.rank and fault.iteration == iteration:
            mark = self.run / FAULT_MARK
            if not mark.exists():  # once: the replacement worker must get past this point
                mark.touch()
                loop.say(f"fault injection: rank {self.rank} exits at iteration {iteration}")
                os._exit(1)

    def report(self, record, state):
        # every rank calls report (it is a barrier); only rank 0 has a checkpoint to give
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if state is not None:
                rundir.save_model(Path(d) / rundir.MODEL, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(record, checkpoint=checkpoint)


def _quiet_report_lines() -> None:
    # Ray Train logs each report at INFO on the console, under a logger named after its source
    # file; the loop already prints the tutorial's line for each evaluation
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_worker(config: dict) -> None:
    """What each Ray Train worker runs."""
    _quiet_report_lines()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # the CPUs this worker was given, no more
    spec = specs.from_dict(config["spec"], "job")
    run = Path(config["run"])
    hooks = RayHooks(run, config["fault"])
    loop.fit(spec, ray.train.torch.get_device(), run, hooks, started=config["started"])


def cluster_check(spec: specs.JobSpec) -> None:
    """Refuse a job the cluster can never place, instead of letting Ray wait forever."""
    have = ray.cluster_resources()
    s = spec.scaling
    want_cpu, want_gpu = s.workers * 1.0, s.workers * (1.0 if s.gpu else 0.0)
    if want_gpu > have.get("GPU", 0):
        raise ClusterTooSmall(f"scaling: asked for {s.workers} GPU worker(s), the cluster has "
                              f"{int(have.get('GPU', 0))} GPU(s)")
    if want_cpu > have.get("CPU", 0):
        raise ClusterTooSmall(f"scaling: asked for {s.workers} worker(s) of 1 CPU each, the cluster has "
                              f"{int(have.get('CPU', 0))} CPU(s)")


def check_batch(spec: specs.JobSpec) -> None:
    b, w = spec.train.batch_size, spec.scaling.workers
    if b % w:
        raise specs.SpecError(f"train.batch_size: {b} does not split evenly over {w} workers")


def connect() -> tuple[bool, Optional[str]]:
    """Join the Ray named by $RAY_ADDRESS, or start an embedded one for this job.

    Returns (whether this call connected, so must disconnect; the dashboard URL if any).
    A process already connected (a notebook, a test fixture) keeps its connection.
    """
    connected = not ray.is_initialized()
    if connected and os.environ.get("RAY_ADDRESS"):
        _join(os.environ["RAY_ADDRESS"])
    elif connected:  # "local": a new Ray, even where `ray start` left one running (or its address file)
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False)
    url = ray._private.worker.get_dashboard_url()  # the URL ray.init prints; public only on its return value
    return connected, f"http://{url}" if url else None


def _join(address: str) -> None:
    """ray.init on an existing cluster, failing in one line instead of retrying for minutes."""
    gcs = _gcs_address(address)
    if gcs is None:
        raise RunFailed(f"--address {address}: no Ray cluster was started on this machine "
                        "(`ray start --head`, or `make cluster-up`)")
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise RunFailed(f"cannot reach a Ray cluster at {gcs}: {getattr(e, 'strerror', None) or e}") from None
    # Ray's C++ client logs every failed retry on fd 2; keep that for the case it connects
    with tempfile.TemporaryFile("w+") as log, _fd2_to(log):
        try:
            ray.init(configure_logging=False)
            failure = None
        except (ConnectionError, RuntimeError) as e:  # AuthenticationError is a RuntimeError
            failure = e
        log.seek(0)
        said = log.read()
    if failure is None:
        sys.stderr.write(said)
    elif "InvalidAuthToken" in said or "uthentication" in str(failure):
        raise RunFailed(f"the Ray cluster at {gcs} rejected the authentication token; give it the cluster's "
                        "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    else:
        raise RunFailed(f"cannot join the Ray cluster at {gcs}: {str(failure).splitlines()[0]}")


@contextlib.contextmanager
def _fd2_to(file):
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def disconnect() -> None:
    ray.shutdown()  # an embedded Ray stops with it; a cluster that was joined keeps running


def absolute(spec: specs.JobSpec) -> specs.JobSpec:
    """The spec with its data folder made absolute: Train workers run in a folder of Ray's."""
    return dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=str(Path(spec.data.root).resolve())))


def trainer(spec: specs.JobSpec, run: Path, started: float, fault: Optional[Fault] = None,
            callbacks=()) -> TorchTrainer:
    """The TorchTrainer for one job; its Ray storage is `<run>/ray`."""
    return TorchTrainer(
        train_worker,
        train_loop_config={"spec": absolute(spec).to_dict(), "run": str(run.resolve()), "started": started,
                           "fault": fault},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.scaling.workers, use_gpu=spec.scaling.gpu),
        run_config=ray.train.RunConfig(
            name="ray", storage_path=str(run.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks)),
    )


def fit(spec: specs.JobSpec, run: Path, started: float, fault: Optional[Fault] = None) -> dict:
    """Run one job on the connected Ray cluster; rank 0 writes the run directory. Returns the summary.

    The caller checks first (check_batch, cluster_check), before it makes the run directory.
    """
    try:
        trainer(spec, run, started, fault).fit()
    except ray.train.TrainingFailedError as e:
        error = f"training failed: {str(e).strip().splitlines()[-1]}"
        rundir.write_summary(run, loop.unfinished_summary(spec, run, "failed", error, started))
        raise TrainingFailed(error) from None
    return rundir.read_summary(run)
