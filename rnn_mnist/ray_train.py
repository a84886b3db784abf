"""Every job as a Ray Train job: one TorchTrainer whose workers call `loop.fit`.

The Ray touch points are the ones in Ray's own examples: prepare the model (DDP),
prepare the loader (a DistributedSampler), report metrics with a checkpoint, fit.
Everything else is the same loop that `rnnjob run` uses.
"""

import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional

import ray
import ray.exceptions
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import TorchTrainer

from . import loop, rayenv, rundir, storage, telemetry, timeline
from . import spec as specs
from .errors import BadInput, RunFailed
from .kernels import process

FAULT_ENV = "RNNJOB_FAULT"  # "RANK:ITERATION": that rank exits once when it reaches that iteration
FAULT_MARK = ".fault-injected"
STOP_WAIT_S = 20  # how long a stopped driver waits for its workers to end before it leaves them to Ray


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


def inject(fault: Optional[Fault], rank: int, run: str, iteration: int) -> None:
    """End this process if `fault` names this rank and iteration, once per run directory: the process
    that replaces it must get past this point."""
    if fault and fault.rank == rank and fault.iteration == iteration:
        mark = storage.join(run, FAULT_MARK)
        if not storage.exists(mark):
            storage.write_bytes(mark, b"")
            loop.say(f"fault injection: rank {rank} exits at iteration {iteration}")
            os._exit(1)


class RayHooks(loop.Hooks):
    """The loop's view of a Ray Train worker."""

    def __init__(self, run: str, fault: Optional[Fault], carry_on: bool = False):
        super().__init__()
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.run, self.fault, self.carry_on = run, fault, carry_on
        # an object store bills and delays every look: there rank 0 looks for a stop request every 5 s
        self.stop_clock = telemetry.Every(5.0 if storage.is_uri(run) else 0.0)

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

    def stop_requested(self):
        # rank 0 looks for the driver's request and tells the others: all must leave the loop at the same step
        asked = False
        if self.rank == 0 and self.stop_clock.due():
            self.stop_clock.done()
            asked = storage.exists(storage.join(self.run, rundir.STOP))
        if self.world_size > 1:
            flag = torch.tensor([float(asked)], device=ray.train.torch.get_device())
            dist.all_reduce(flag)
            asked = flag.item() > 0
        return asked

    def resume(self):
        checkpoint = ray.train.get_checkpoint()  # this job's own, after a worker died
        if checkpoint:
            self.carried_on = False
            with checkpoint.as_directory() as d:
                return rundir.load_model(d)
        if self.carry_on and storage.exists(storage.join(self.run, rundir.MODEL)):  # rnnjob resume
            self.carried_on = True
            return rundir.load_model(self.run)
        return None

    def nodes(self):
        mine = ray.get_runtime_context().get_node_id()
        if self.world_size == 1:
            return [mine]
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def after_step(self, iteration):
        inject(self.fault, self.rank, self.run, iteration)

    def publishers(self, run):
        return [RayMetrics(storage.basename(run), self.rank)]

    def report(self, record, state):
        # every rank calls report (it is a barrier); only rank 0 has a checkpoint to give
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if state is not None:
                rundir.save_model(d, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(record, checkpoint=checkpoint)


class RayMetrics(telemetry.Publisher):
    """Live metrics through Ray's metrics API (`ray.util.metrics`): each node's metrics endpoint
    exports them as ray_rnnjob_*, for Prometheus and Grafana. Tagged with the run's name (a grid
    trial's name for a trial); what differs per rank also with the rank. Rank 0 alone sets what
    every rank agrees on."""

    def __init__(self, run: str, rank: int):
        from ray.util.metrics import Gauge

        self.rank = rank
        self.per_run, self.per_rank = {"run": run}, {"run": run, "rank": str(rank)}
        run_tags, rank_tags = ("run",), ("run", "rank")
        self.clock = telemetry.Every(1.0)  # Ray exports a node's metrics every few seconds, and each set costs
        self.iteration = Gauge("rnnjob_iteration", "optimizer steps done", tag_keys=run_tags)
        self.loss = Gauge("rnnjob_train_loss", "training loss of the latest batch (rank 0's)", tag_keys=run_tags)
        self.accuracy = Gauge("rnnjob_test_accuracy", "test accuracy (%) at the latest evaluation",
                              tag_keys=run_tags)
        self.samples = Gauge("rnnjob_samples_per_second", "training samples per second, this rank",
                             tag_keys=rank_tags)
        self.step_time = Gauge("rnnjob_seconds_per_step", "seconds per optimizer step, this rank",
                               tag_keys=rank_tags)

    def steps(self, tick):
        if not self.clock.due():
            return
        self.clock.done()
        self.samples.set(tick["samples_per_second"], tags=self.per_rank)
        self.step_time.set(tick["seconds_per_step"], tags=self.per_rank)
        if self.rank == 0:
            self.iteration.set(tick["iteration"], tags=self.per_run)
            self.loss.set(tick["loss"], tags=self.per_run)

    def evaluation(self, record):
        if self.rank == 0:
            self.iteration.set(record["iteration"], tags=self.per_run)
            self.accuracy.set(record["accuracy"], tags=self.per_run)


def train_worker(config: dict) -> None:
    """What each Ray Train worker runs."""
    # Ray Train 2.60 logs every report at INFO under a logger named after its source file, which
    # LoggingConfig does not reach; it takes its level from the root logger. The loop prints the
    # tutorial's line for each evaluation already.
    logging.getLogger().setLevel(logging.WARNING)
    timeline.adopt(config.get("timeline"))
    if timeline.setting():
        timeline.mark("worker process started", timeline.process_started())
        timeline.mark("worker function entered")
    device = ray.train.torch.get_device()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    process.tune(device.type, threads=max(1, int(cpus)))  # the CPUs this worker was given, no more
    spec = specs.from_dict(config["spec"], "job")
    hooks = RayHooks(config["run"], config["fault"], config["resume"])
    try:
        loop.fit(spec, device, config["run"], hooks)
    except loop.Diverged as e:
        # every rank sees the same reduced loss, so all stop here together: end the workers normally with
        # the reason in the run directory, rather than have Ray Train retry from the same checkpoint
        if hooks.rank == 0:
            storage.write_bytes(storage.join(config["run"], rundir.FAILED), str(e).encode())


def _stop_workers(stop: str, done: threading.Event) -> None:
    """Ctrl-C or `rnnjob stop` in the driver: ask the workers to leave their loop at the next tick and wait
    (up to STOP_WAIT_S; a second Ctrl-C stops waiting) for the job to end, so that no checkpoint lands after
    the summary the caller writes next. Workers that do not answer end when the Ray session does."""
    storage.write_bytes(stop, b"")
    timeline.mark("stop requested")
    try:
        done.wait(STOP_WAIT_S)
    except KeyboardInterrupt:
        pass
    timeline.mark("stop wait over")
    storage.remove(stop)


def failure(run: str) -> Optional[str]:
    """Why the workers of the job in `run` stopped without finishing, if they said so."""
    mark = storage.join(run, rundir.FAILED)
    return storage.read_bytes(mark).decode() if storage.exists(mark) else None


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
    own_sigterm = signal.getsignal(signal.SIGTERM)
    if os.environ.get("RAY_ADDRESS"):
        context = _join(os.environ["RAY_ADDRESS"])
    else:
        context = embedded()
    if callable(own_sigterm) and threading.current_thread() is threading.main_thread():
        # ray.init puts a handler of Ray's in place of this process's own (a stack dump, then death): keep
        # ours, so that `rnnjob stop` or `kill` ends a run as Ctrl-C does, with its summary
        signal.signal(signal.SIGTERM, own_sigterm)
    timeline.mark("ray joined" if os.environ.get("RAY_ADDRESS") else "ray started")
    lost = False
    try:
        if context.dashboard_url:
            echo(f"Ray dashboard: http://{context.dashboard_url}")
        yield
    except ClusterLost:
        # its head is gone: leaving it would wait on the dead head (up to rayenv's reconnect limit) before
        # the caller could say so; Ray leaves it at the process's exit
        lost = True
        raise
    finally:
        if not lost:
            ray.shutdown()  # an embedded Ray stops with it; a cluster that was joined keeps running
        timeline.mark("ray left")


DASHBOARD_PORT = 8265  # Ray's own default


def embedded(**settings):
    """ray.init of a new Ray on this machine ("local": even where `ray start` left one running, or its address
    file), with its dashboard on 127.0.0.1 (DASHBOARD_PORT where free, as Ray's default, else a free port).
    That dashboard's address goes to this Ray's own processes as RAY_API_SERVER_ADDRESS, and nowhere else:
    Ray Train's PlacementGroupCleaner asks Ray's State API whether a job's controller still lives, and the
    State API without an address takes the cluster `ray start` last recorded on this machine. With a
    `make cluster-up` running beside an embedded Ray, the cleaner asked that cluster, did not find the
    controller there, and ended (a placement group it had registered would have been removed under the
    running job), with a dozen lines of Ray's on the user's terminal.

    The port is chosen before Ray starts, and Ray's dashboard binds it seconds later: two embedded Rays
    started at once on one machine would both choose 8265, and the second's dashboard fail to start. The
    choice and the start are one step, machine-wide: each start holds EMBEDDED_LOCK until its dashboard
    listens (ray.init returns once it does)."""
    with _machine_lock(EMBEDDED_LOCK):
        port = DASHBOARD_PORT if _port_free(DASHBOARD_PORT) else _free_port()
        name, before = rayenv.API_SERVER_ENV, os.environ.get(rayenv.API_SERVER_ENV)
        os.environ[name] = f"http://127.0.0.1:{port}"  # read by the processes ray.init starts
        try:
            return ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                            dashboard_port=port, configure_logging=False, **settings)
        finally:  # not by this process: its own commands would take it for a Jobs API (rayenv.jobs_address)
            if before is None:
                del os.environ[name]
            else:
                os.environ[name] = before


EMBEDDED_LOCK = os.path.join(tempfile.gettempdir(), "rnnjob-embedded-ray.lock")


@contextlib.contextmanager
def _machine_lock(path: str):
    """An exclusive lock on `path`, for every process of this machine that takes it; released when the
    block ends or the process does. Where the file cannot be opened (another user's, say), no lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(address: str):
    """ray.init on an existing cluster, failing in one line instead of retrying for minutes."""
    gcs = rayenv.gcs_address(address)
    if gcs is None:
        raise RunFailed(f"--address {address}: no Ray cluster was started on this machine "
                        "(`ray start --head`, or `make cluster-up`)")
    host, _, port = gcs.rpartition(":")
    if ":" in host and not host.startswith("["):
        raise BadInput(f"--address {specs.show(address)[1:-1]}: an IPv6 address goes in brackets: [{host}]:{port}")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--address {specs.show(address)[1:-1]}: expected HOST:PORT, http://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise RunFailed(f"cannot reach a Ray cluster at {gcs}: {e.strerror or e}") from None
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


def trainer(spec: specs.JobSpec, run: str, fault: Optional[Fault] = None, callbacks=(),
            resume: bool = False) -> TorchTrainer:
    """The TorchTrainer for one job (its paths resolved already); its Ray storage is `<run>/ray`.
    resume: carry on from the run directory's model.pt (rnnjob resume)."""
    return TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec.to_dict(), "run": run, "fault": fault, "resume": resume,
                           "timeline": timeline.setting()},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.scaling.workers, use_gpu=spec.scaling.gpu,
                                               resources_per_worker=_per_worker(spec.scaling)),
        run_config=ray.train.RunConfig(
            # a resumed run's Ray storage is new: Ray Train would otherwise restore the earlier attempt's
            # checkpoints itself, and the resume would pass for a worker restart
            name=time.strftime("ray-resumed-%Y%m%d-%H%M%S") if resume else "ray", storage_path=storage.for_ray(run),
            failure_config=ray.train.FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks)),
    )


def fit(spec: specs.JobSpec, run: str, fault: Optional[Fault] = None, resume: bool = False) -> None:
    """Run one job on the connected Ray cluster; rank 0 writes metrics and checkpoints into `run`.
    Ctrl-C (or SIGTERM) raises KeyboardInterrupt here once the workers have left their loop
    (_stop_workers), for the caller to record.

    The caller checks first (check_batch, check_fits), before it makes the run directory."""
    ended: dict = {}
    done = threading.Event()  # not Thread.join: a join that Ctrl-C interrupts marks the thread as ended
    # while it still runs (Python 3.11, bpo-45274's fix)

    def fit_here():
        try:
            trainer(spec, run, fault, resume=resume).fit()
        except BaseException as e:  # handed to the main thread
            ended["error"] = e
        finally:
            done.set()

    # Ray Train installs a SIGINT handler of its own when fit() runs in the main thread, which ends the
    # process (SystemExit) before the caller can write the run's summary; from another thread it does not
    worker = threading.Thread(target=fit_here, name="rnnjob-fit", daemon=True)
    stop = storage.join(run, rundir.STOP)
    storage.remove(stop)
    timeline.mark("fit called")
    worker.start()
    watch = ClusterWatch(spec, run)
    try:
        while not done.wait(ClusterWatch.EVERY_S):
            watch.look()  # ClusterLost: the caller records the run as failed at its last checkpoint
    except KeyboardInterrupt:
        _stop_workers(stop, done)
        raise
    timeline.mark("fit returned")
    error = ended.get("error")
    if isinstance(error, ray.train.TrainingFailedError):
        raise TrainingFailed(f"training failed: {str(error).strip().splitlines()[-1]}") from None
    if isinstance(error, ray.exceptions.RayError):  # the cluster went away between two looks
        head = "its head no longer answers" if not watch.head_answers() else "a node the job ran on is gone"
        raise ClusterLost(watch.lost(f"{head}; Ray: {type(error).__name__}")) from None
    if error is not None:
        raise error
    if failure(run):
        raise TrainingFailed(failure(run))


class ClusterLost(RunFailed):
    """The cluster under a job went away (its head, or a node the job needs): the job cannot go on."""


class ClusterWatch:
    """What the driver looks at while a job trains: that the cluster's head (its GCS) still answers, and that
    the cluster still holds what the job asked for. Ray itself would retry for a minute or more, or, for a
    lost node, wait for one forever; the driver gives up sooner, with the run's summary written."""

    EVERY_S = 2.0
    HEAD_GONE_S = 10.0  # a head that has not answered this long is gone (a restart takes longer anyway)
    TOO_SMALL_S = 30.0  # Ray Train may be replacing a worker meanwhile; a lost node does not come back that fast

    def __init__(self, spec: specs.JobSpec, run: str):
        self.spec, self.run = spec, run
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        self.gcs = (host.strip("[]"), int(port))
        self.head_silent = self.too_small = None  # since when

    def lost(self, what: str) -> str:
        return (f"lost the Ray cluster at {self.gcs[0]}:{self.gcs[1]} ({what}); the run keeps its last checkpoint: "
                f"carry it on with `rnnjob resume {self.run}`")

    def head_answers(self) -> bool:
        try:
            socket.create_connection(self.gcs, timeout=2).close()
            return True
        except OSError:
            return False

    @staticmethod
    def resources(wait_s: float = 2.0) -> Optional[dict]:
        """The cluster's resources, or None where its head does not say within wait_s: a request to a head
        that dies meanwhile waits for Ray's reconnect limit, and the look must not."""
        got: dict = {}

        def ask():
            with contextlib.suppress(Exception):
                got["have"] = ray.cluster_resources()

        asking = threading.Thread(target=ask, name="rnnjob-cluster-resources", daemon=True)
        asking.start()
        asking.join(wait_s)
        return got.get("have")

    def look(self) -> None:
        now = time.monotonic()
        if self.head_answers():
            self.head_silent = None
        else:
            self.head_silent = self.head_silent or now
            if now - self.head_silent >= self.HEAD_GONE_S:
                raise ClusterLost(self.lost(f"its head no longer answers: not for {self.HEAD_GONE_S:.0f} s"))
            return
        have = self.resources()
        if have is None:  # the GCS answers connections but not requests: the next look decides
            return
        s = self.spec.scaling
        need_cpu, need_gpu = s.workers * cpus_each(s), s.workers * (1 if s.gpu else 0)
        if have.get("CPU", 0) >= need_cpu and have.get("GPU", 0) >= need_gpu:
            self.too_small = None
            return
        self.too_small = self.too_small or now
        if now - self.too_small >= self.TOO_SMALL_S:
            cpus, gpus = int(have.get("CPU", 0)), int(have.get("GPU", 0))
            raise ClusterLost(self.lost(f"it lost a node: it holds {cpus} CPU(s) and {gpus} GPU(s) now, the job "
                                        f"needs {need_cpu} and {need_gpu}"))
