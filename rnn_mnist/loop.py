"""The tutorial's seven steps, once: a local run and every Ray worker call `fit`.

Steps 1-2 (dataset, iterable) are `data.load` and `data.train_loader`, 3-4 the
model, 5 the loss, 6 the optimizer, 7 the loop in `fit` around `train_step`.
What differs between one local process and a Ray worker (DDP wrapping, the
distributed sampler, summing across workers, checkpoints) comes in as `Hooks`.
"""

import math
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from . import data, kernels, rundir, telemetry, timeline
from .errors import BadInput, RunFailed
from .model import count_params
from .spec import JobSpec

TICK_EVERY = 10  # steps between ticks to the publishers (each reads the loss back to the host)


class Diverged(RunFailed):
    """The loss is no longer a finite number: more steps cannot help."""


def say(line: str) -> None:
    """One line to the user. Not print(): Ray Train workers reroute print through a logger,
    which shows every line twice on the driver; stdout itself reaches it once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Hooks:
    """A single local process; the Ray layer subclasses this for its workers."""

    rank = 0
    world_size = 1
    gradient_sync: Optional[str] = None  # the DDP backend that averages gradients (gloo, nccl), None for one

    def __init__(self, saved: Optional[dict] = None):
        self.saved = saved  # a checkpoint's state to carry on from (rnnjob resume)
        self.carried_on = saved is not None  # the state comes from a user's resume, not from a restart

    def prepare_model(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def prepare_loader(self, loader):
        return loader

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over workers; every worker gets the same result."""
        return tensor

    def resume(self) -> Optional[dict]:
        """The state of the checkpoint this job carries on from, if any."""
        return self.saved

    def nodes(self) -> list:
        """Where each rank runs, in rank order (a collective: every worker calls it)."""
        return [socket.gethostname()]

    def after_step(self, iteration: int) -> None:
        """Called on every worker after each optimizer step (fault injection lives here)."""

    def report(self, record: dict, state: Optional[dict]) -> None:
        """Called on every worker after each evaluation; state only on rank 0."""

    def stop_requested(self) -> bool:
        """Asked on every worker every TICK_EVERY steps: whether to end here, without another
        checkpoint (a Ray job whose driver was stopped). Every worker gets the same answer."""
        return False

    def publishers(self, run: Optional[str]) -> list:
        """What this worker publishes while it trains besides the run directory (Ray's metrics)."""
        return []


def build_model(spec: JobSpec, device_type: str = "cpu") -> nn.Module:
    m = spec.model
    cls = kernels.model_class(m.cell, m.kernel, device_type)
    return cls(28, m.hidden_dim, m.layer_dim, 10, nonlinearity=m.nonlinearity, cell=m.cell)


def build_optimizer(spec: JobSpec, params) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


def lr_at(spec: JobSpec, iteration: int) -> float:
    """The learning rate for the step after `iteration` steps. A function of the iteration alone:
    a resumed job needs no scheduler state."""
    t = spec.train
    if t.lr_decay == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * iteration / t.iters))
    return t.lr


def train_step(model, images, labels, criterion, optimizer, grad_clip=None) -> torch.Tensor:
    optimizer.zero_grad()
    loss = criterion(model(images), labels)  # images: (batch, 28, 28) -> logits (batch, 10)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


@torch.inference_mode()
def evaluate(model, images, labels, device, rank=0, world_size=1, batch=500) -> torch.Tensor:
    """Correct predictions on this worker's contiguous share of the test set (a 0-d tensor)."""
    share = math.ceil(len(labels) / world_size)
    lo, hi = rank * share, min(len(labels), (rank + 1) * share)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(lo, hi, batch):
        x = data.scale(images[start:min(hi, start + batch)].to(device))
        y = labels[start:min(hi, start + batch)].to(device)
        correct += (model(x).argmax(dim=1) == y).sum()
    model.train(was_training)
    return correct


def _start_epoch(loader, seed: int, epoch: int) -> None:
    # the data order is a function of (seed, epoch) alone, so a resumed run sees what it would have
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):  # DistributedSampler, added by Ray for several workers
        sampler.seed = seed
        sampler.set_epoch(epoch)
    else:
        loader.generator.manual_seed(seed + epoch)


def batches(loader, seed: int, iteration: int) -> Iterator:
    """Endless (images, labels) batches, epoch after epoch, starting where iteration left off."""
    epoch, skip = divmod(iteration, len(loader))
    while True:
        _start_epoch(loader, seed, epoch)
        for i, batch in enumerate(loader):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


@dataclass
class Progress:
    """Where a job stands. Saved with every checkpoint, so a restarted job carries on from it."""

    iteration: int = 0
    history: list = field(default_factory=list)  # one record per evaluation
    train_seconds: float = 0.0  # optimizer steps only, evaluations and checkpoints excluded
    elapsed: float = 0.0  # since training began, evaluations included
    restarts: int = 0  # by Ray Train, after a worker died
    resumes: list = field(default_factory=list)  # by `rnnjob resume`: where each began, and to what length


def _restore(spec: JobSpec, device, hooks: Hooks):
    """Model, optimizer and progress: fresh, or from the checkpoint the job carries on from."""
    torch.manual_seed(spec.train.seed)
    model = build_model(spec, device.type)
    saved = hooks.resume()
    if saved:
        model.load_state_dict(saved["model"])
        torch.set_rng_state(saved["rng"])
    model = hooks.prepare_model(model, device)
    optimizer = build_optimizer(spec, model.parameters())
    progress = Progress()
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**{f.name: saved[f.name] for f in fields(Progress) if f.name in saved})
        if hooks.carried_on:
            progress.resumes.append({"iteration": progress.iteration, "iters": spec.train.iters,
                                     "previous_iters": saved["spec"]["train"]["iters"],
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            what = f"resume {len(progress.resumes)}, to {spec.train.iters} iterations"
        else:
            progress.restarts += 1
            what = f"restart {progress.restarts}"
        if hooks.rank == 0:
            say(f"resumed from the checkpoint at iteration {progress.iteration} ({what})")
    return model, optimizer, progress


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model itself, out of the DDP wrapper Ray puts around it for several workers."""
    return getattr(model, "module", model)


def _accuracy(model, images, labels, device, hooks: Hooks) -> float:
    """Accuracy in % over all these images (each worker its share), agreed by all workers."""
    # evaluate outside DDP: no gradient sync to set up
    correct = hooks.all_reduce(evaluate(_unwrapped(model), images, labels, device, hooks.rank, hooks.world_size))
    return 100.0 * correct.item() / len(labels)


def _measure(model, loss, test, validation, device, hooks: Hooks, iteration: int) -> dict:
    """Test accuracy over all 10k images, the validation images' if the job holds some out, and the
    batch loss, agreed by all workers."""
    mean_loss = (hooks.all_reduce(loss.clone()) / hooks.world_size).item()
    if not math.isfinite(mean_loss):  # every worker sees the same reduced loss, so all stop together
        raise Diverged(f"training diverged: the loss was {mean_loss} at iteration {iteration} "
                       "(lower train.lr, or set train.grad_clip)")
    record = {"loss": mean_loss, "accuracy": _accuracy(model, *test, device, hooks)}
    if validation:
        record["val_accuracy"] = _accuracy(model, *validation, device, hooks)
    return record


def _checkpoint(spec, model, optimizer, progress: Progress, setup: dict, run: Optional[str], hooks: Hooks) -> None:
    record, state = progress.history[-1], None
    if hooks.rank == 0:
        # unwrapped: the file loads the same whatever the worker count
        state = {"spec": spec.to_dict(), "model": _unwrapped(model).state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": torch.get_rng_state(), "setup": setup, **asdict(progress)}
        if run:
            rundir.write_metrics(run, progress.history)
            rundir.save_model(run, state)
    hooks.report(record, state)


def _setup(model, device, hooks: Hooks) -> dict:
    """Where and how this job trains, for its summary (the same on every rank)."""
    return {"device": device.type, "workers": hooks.world_size, "threads": torch.get_num_threads(),
            "params": count_params(model), "nodes": hooks.nodes(), "gradient_sync": hooks.gradient_sync}


class _Ticker:
    """Hands the publishers a tick every TICK_EVERY steps, timed over the steps alone, and each
    evaluation's record."""

    def __init__(self, publishers: list, batch: int, iteration: int):
        self.publishers, self.batch = publishers, batch
        self.restart(iteration)

    def restart(self, iteration: int) -> None:
        self.clock, self.since = time.perf_counter(), iteration

    def step(self, iteration: int, loss: torch.Tensor, lr: float) -> None:
        if iteration % TICK_EVERY or not self.publishers:
            return
        per_step = (time.perf_counter() - self.clock) / (iteration - self.since)
        tick = {"iteration": iteration, "loss": loss.item(), "lr": lr, "seconds_per_step": per_step,
                "samples_per_second": self.batch / per_step}
        for publisher in self.publishers:
            publisher.steps(tick)
        self.restart(iteration)

    def evaluation(self, record: dict) -> None:
        for publisher in self.publishers:
            publisher.evaluation(record)
        self.restart(record["iteration"])


def fit(spec: JobSpec, device: torch.device, run: Optional[str] = None, hooks: Optional[Hooks] = None,
        publishers: Sequence[telemetry.Publisher] = ()) -> Progress:
    """Train spec's model to exactly spec.train.iters steps, or to the first evaluation that reaches
    spec.train.target_accuracy (time to accuracy); rank 0 writes metrics.jsonl and model.pt
    into `run` at every evaluation. Publishers (and the run's own telemetry) get a tick every
    TICK_EVERY steps and every evaluation. Returns where the job stands at the end."""
    hooks = hooks or Hooks()
    t = spec.train
    model, optimizer, done = _restore(spec, device, hooks)
    setup = _setup(model, device, hooks)
    timeline.mark("model ready")
    train = data.load(spec.data.root, train=True, log=say)
    test = data.load(spec.data.root, train=False, log=say)
    validation = None
    if spec.data.validation:
        train, validation = data.split(*train, spec.data.validation)
    timeline.mark("data loaded")
    batch = t.batch_size // hooks.world_size
    loader = hooks.prepare_loader(data.train_loader(*train, batch, t.seed))
    criterion = nn.CrossEntropyLoss()
    publishers = [*publishers, *telemetry.for_run(run, t.iters, done.iteration, hooks.rank), *hooks.publishers(run)]
    ticker = _Ticker(publishers, batch, done.iteration)

    model.train()
    stream = batches(loader, t.seed, done.iteration)
    clock = start = time.perf_counter()
    elapsed_before, first = done.elapsed, done.iteration + 1
    reached = rundir.reached_target(spec, done.history)  # a resumed run that had reached its target has nothing to do
    try:
        while done.iteration < t.iters and not reached:
            images, labels = next(stream)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            lr = lr_at(spec, done.iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(model, images, labels, criterion, optimizer, t.grad_clip)
            done.iteration += 1
            if done.iteration == first:
                timeline.mark("first step done")
            hooks.after_step(done.iteration)
            ticker.step(done.iteration, loss, lr)
            if done.iteration % TICK_EVERY == 0 and hooks.stop_requested():
                break  # the last checkpoint stands, as after Ctrl-C in `rnnjob run`
            if done.iteration % t.eval_every == 0 or done.iteration == t.iters:
                if device.type == "cuda":  # the steps queued on the GPU belong to the training time
                    torch.cuda.synchronize(device)
                done.train_seconds += time.perf_counter() - clock
                timeline.mark("evaluation started")
                record = _measure(model, loss, test, validation, device, hooks, done.iteration)
                done.elapsed = round(elapsed_before + time.perf_counter() - start, 3)
                done.history.append({"iteration": done.iteration, **record, "elapsed": done.elapsed})
                _checkpoint(spec, model, optimizer, done, setup, run, hooks)
                ticker.evaluation(done.history[-1])
                if hooks.rank == 0:
                    # after the files, Ray's report and the publishers (TensorBoard's events): the line means
                    # this evaluation is kept everywhere (a Ctrl-C after it loses none of it)
                    say(f"Iteration: {done.iteration}. Loss: {record['loss']}. Accuracy: {record['accuracy']:.2f}")
                timeline.mark("evaluation reported")
                reached = rundir.reached_target(spec, done.history)  # the same on every worker: all stop together
                clock = time.perf_counter()
    finally:
        for publisher in publishers:
            publisher.close()
        timeline.mark("loop ended")
    return done
