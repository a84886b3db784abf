"""Every job as a Ray Train job: one TorchTrainer whose workers call `loop.fit`.

The Ray touch points are the ones in Ray's own examples: prepare the model (DDP),
prepare the loader (a DistributedSampler), report metrics with a checkpoint, fit.
Everything else is the same loop that `rnnjob run` uses.
"""

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

from . import rayenv  # noqa: F401  (before ray: settings Ray reads at import)

import ray  # noqa: E402
import ray.train  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from . import loop, rundir, storage  # noqa: E402
from .kernels import process  # noqa: E402
from . import spec as specs  # noqa: E402
from .errors import BadInput, RunFailed  # noqa: E402

PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train passes it on to its controller
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

    def __init__(self, run: str, fault: Optional[Fault]):
        super().__init__()
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.run, self.fault = run, fault

    def prepare_model(self, model, device):
        model = ray.train.torch.prepare_model(model)  # moves to the worker's device; DDP if several workers
        if self.world_size > 1:
            self.gradient_sync = dist.get_backend()  # gloo on CPUs, nccl on GPUs
        return model

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
            return rundir.load_model(d)

    def nodes(self):
        mine = ray.get_runtime_context().get_node_id()
        if self.world_size == 1:
            return [mine]
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def after_step(self, iteration):
        fault = self.fault
        if fault and fault.rank == self.rank and fault.iteration == iteration:
            mark = storage.join(self.run, FAULT_MARK)
            if not storage.exists(mark):  # once: the replacement worker must get past this point
                storage.write_bytes(mark, b"")
                loop.say(f"fault injection: rank {self.rank} exits at iteration {iteration}")
                os._exit(1)

    def report(self, record, state):
        # every rank calls report (it is a barrier); only rank 0 has a checkpoint to give
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if state is not None:
                rundir.save_model(d, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(record, checkpoint=checkpoint)


def train_worker(config: dict) -> None:
    """What each Ray Train worker runs."""
    # Ray Train 2.60 logs every report at INFO under a logger named after its source file, which
    # LoggingConfig does not reach; it takes its level from the root logger. The loop prints the
    # tutorial's line for each evaluation already.
    logging.getLogger().setLevel(logging.WARNING)
    device = ray.train.torch.get_device()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    process.tune(device.type, threads=max(1, int(cpus)))  # the CPUs this worker was given, no more
    spec = specs.from_dict(config["spec"], "job")
    loop.fit(spec, device, config["run"], RayHooks(config["run"], config["fault"]))


def with_cpus(spec: specs.JobSpec) -> specs.JobSpec:
    """The spec of a job alone on the cluster with scaling.cpus_per_worker settled: its workers share
    the cluster's CPUs (one worker on 2 cores trains with 2 threads). A grid's trials leave it null."""
    s = spec.scaling
    if s.cpus_per_worker is not None:
        return spec
    cpus = max(1, int(ray.cluster_resources().get("CPU", 0)) // s.workers)
    return dataclasses.replace(spec, scaling=dataclasses.replace(s, cpus_per_worker=cpus))


def cpus_each(scaling: specs.ScalingSpec) -> int:
    """The CPUs one worker takes: cpus_per_worker, or 1 where it is null (a grid's trials)."""
    return scaling.cpus_per_worker or 1


def check_fits(spec: specs.JobSpec) -> None:
    """Refuse a job the cluster can never place, instead of letting Ray wait forever, and a run
    directory on one node's disk when several nodes may write to it."""
    have = ray.cluster_resources()
    s = spec.scaling
    cpus = cpus_each(s)
    want_cpu, want_gpu = s.workers * cpus, s.workers * (1.0 if s.gpu else 0.0)
    if want_gpu > have.get("GPU", 0):
        raise ClusterTooSmall(f"scaling: asked for {s.workers} GPU worker(s), the cluster has "
                              f"{int(have.get('GPU', 0))} GPU(s)")
    if want_cpu > have.get("CPU", 0):
        raise ClusterTooSmall(f"scaling: asked for {s.workers} worker(s) of {cpus} CPU(s) each, the cluster has "
                              f"{int(have.get('CPU', 0))} CPU(s)")
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) > 1 and not spec.output.storage:
        raise BadInput(f"output.storage: this cluster has {len(nodes)} nodes, and output.dir ({spec.output.dir}) "
                       "is a folder on one of them; set output.storage to a folder or URI that every node and "
                       "the driver reach (a shared file system, s3://, gs://)")


def check_batch(spec: specs.JobSpec) -> None:
    b, w = spec.train.batch_size, spec.scaling.workers
    if b % w:
        raise specs.SpecError(f"train.batch_size: {b} does not split evenly over {w} workers")


@contextlib.contextmanager
def session(echo):
    """Ray for one command: the cluster in $RAY_ADDRESS joined, or an embedded Ray started (and
    stopped after); its dashboard named. A process already connected (a notebook, a test fixture)
    keeps its connection as it was."""
    if ray.is_initialized():
        yield
        return
    if os.environ.get("RAY_ADDRESS"):
        context = _join(os.environ["RAY_ADDRESS"])
    else:  # "local": a new Ray, even where `ray start` left one running (or its address file)
        # nothing preempts one machine: no PreemptionWatcher actor (a process more to start on the job's
        # cores, which also logs ray-project/ray#53727's error line at every start); a set value wins
        os.environ.setdefault(PREEMPTION_ENV, "0")
        context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                           configure_logging=False)
    try:
        if context.dashboard_url:
            echo(f"Ray dashboard: http://{context.dashboard_url}")
        yield
    finally:
        ray.shutdown()  # an embedded Ray stops with it; a cluster that was joined keeps running


def _join(address: str):
    """ray.init on an existing cluster, failing in one line instead of retrying for minutes."""
    gcs = rayenv.gcs_address(address)
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
            context = ray.init(configure_logging=False)
            failure = None
        except (ConnectionError, RuntimeError) as e:  # AuthenticationError is a RuntimeError
            failure = e
        log.seek(0)
        said = log.read()
    if failure is None:
        sys.stderr.write(said)
        return context
    if "InvalidAuthToken" in said or "uthentication" in str(failure):
        raise rayenv.token_rejected(gcs)
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


def _per_worker(scaling: specs.ScalingSpec) -> dict:
    return {"CPU": cpus_each(scaling), **({"GPU": 1} if scaling.gpu else {})}


def trainer(spec: specs.JobSpec, run: str, fault: Optional[Fault] = None, callbacks=()) -> TorchTrainer:
    """The TorchTrainer for one job (its paths resolved already); its Ray storage is `<run>/ray`."""
    return TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec.to_dict(), "run": run, "fault": fault},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.scaling.workers, use_gpu=spec.scaling.gpu,
                                               resources_per_worker=_per_worker(spec.scaling)),
        run_config=ray.train.RunConfig(
            name="ray", storage_path=run,
            failure_config=ray.train.FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks)),
    )


def fit(spec: specs.JobSpec, run: str, fault: Optional[Fault] = None) -> None:
    """Run one job on the connected Ray cluster; rank 0 writes metrics and checkpoints into `run`.

    The caller checks first (check_batch, check_fits), before it makes the run directory."""
    try:
        trainer(spec, run, fault).fit()
    except ray.train.TrainingFailedError as e:
        raise TrainingFailed(f"training failed: {str(e).strip().splitlines()[-1]}") from None
