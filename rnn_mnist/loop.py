"""The tutorial's seven steps, once: a local run and every Ray worker call `fit`.

Steps 1-2 (dataset, iterable) are `data.load` and `data.train_loader`, 3-4 the
model, 5 the loss, 6 the optimizer, 7 the loop in `fit` around `train_step`.
What differs between one local process and a Ray worker (DDP wrapping, the
distributed sampler, summing across workers, checkpoints) comes in as `Hooks`.
"""

import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import data, rundir
from .model import RNNModel, count_params
from .spec import JobSpec, SpecError

PROGRESS_EVERY = 10  # iterations between progress-bar updates (each reads the loss back to the host)


class Hooks:
    """A single local process; the Ray layer subclasses this for its workers."""

    rank = 0
    world_size = 1

    def prepare_model(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def prepare_loader(self, loader):
        return loader

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over workers; every worker gets the same result."""
        return tensor

    def resume(self) -> Optional[dict]:
        """The state saved by the latest checkpoint of this job, if it is being restarted."""
        return None

    def report(self, record: dict, state: Optional[dict]) -> None:
        """Called on every worker after each evaluation; state only on rank 0."""


def build_model(spec: JobSpec) -> RNNModel:
    m = spec.model
    return RNNModel(28, m.hidden_dim, m.layer_dim, 10, nonlinearity=m.nonlinearity, cell=m.cell)


def build_optimizer(spec: JobSpec, params) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


def train_step(model, images, labels, criterion, optimizer, grad_clip=None) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(images), labels)  # images: (batch, 28, 28) -> logits (batch, 10)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


@torch.inference_mode()
def evaluate(model, images, labels, device, rank=0, world_size=1, batch=2000) -> torch.Tensor:
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


def _state(spec, model, optimizer, iteration, history, train_seconds, elapsed) -> dict:
    core = getattr(model, "module", model)  # unwrap DDP: the file loads the same from any worker count
    return {
        "spec": spec.to_dict(),
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "history": list(history),
        "train_seconds": train_seconds,
        "elapsed": elapsed,
        "rng": torch.get_rng_state(),
    }


def fit(spec: JobSpec, device: torch.device, run: Optional[Path] = None, hooks: Hooks = None,
        progress: Optional[Callable[[int, float], None]] = None, started: Optional[float] = None) -> dict:
    """Train spec's model for exactly spec.train.iters steps; rank 0 writes `run` and returns its summary."""
    hooks = hooks or Hooks()
    started = started or time.time()
    rank0 = hooks.rank == 0
    t = spec.train

    torch.manual_seed(t.seed)
    model = build_model(spec)
    params = count_params(model)
    saved = hooks.resume()
    if saved:
        model.load_state_dict(saved["model"])
        torch.set_rng_state(saved["rng"])
    model = hooks.prepare_model(model, device)
    optimizer = build_optimizer(spec, model.parameters())
    criterion = nn.CrossEntropyLoss()
    iteration, history, train_seconds, elapsed0 = 0, [], 0.0, 0.0
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        iteration, history = saved["iteration"], saved["history"]
        train_seconds, elapsed0 = saved["train_seconds"], saved["elapsed"]

    train_images, train_labels = data.load(spec.data.root, train=True)
    test_images, test_labels = data.load(spec.data.root, train=False)
    loader = hooks.prepare_loader(
        data.train_loader(train_images, train_labels, t.batch_size // hooks.world_size, t.seed))

    model.train()
    epoch, skip = divmod(iteration, len(loader))
    clock = t0 = time.perf_counter()
    while iteration < t.iters:
        _start_epoch(loader, t.seed, epoch)
        for images, labels in loader:
            if skip:  # resuming mid-epoch: pass over the batches already trained on
                skip -= 1
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = train_step(model, images, labels, criterion, optimizer, t.grad_clip)
            iteration += 1
            if progress and iteration % PROGRESS_EVERY == 0:
                progress(iteration, loss.item())
            if iteration % t.eval_every == 0 or iteration == t.iters:
                train_seconds += time.perf_counter() - clock
                correct = hooks.all_reduce(evaluate(model, test_images, test_labels, device,
                                                    hooks.rank, hooks.world_size))
                mean_loss = hooks.all_reduce(loss.clone()) / hooks.world_size
                record = {"iteration": iteration, "loss": mean_loss.item(),
                          "accuracy": 100.0 * correct.item() / len(test_labels),
                          "elapsed": round(elapsed0 + time.perf_counter() - t0, 3)}
                history.append(record)
                state = None
                if rank0:
                    print(f"Iteration: {iteration}. Loss: {record['loss']}. Accuracy: {record['accuracy']:.2f}",
                          flush=True)
                    state = _state(spec, model, optimizer, iteration, history, train_seconds, record["elapsed"])
                    if run:
                        rundir.write_metrics(run, history)
                        rundir.save_model(run / rundir.MODEL, state)
                hooks.report(record, state)
                clock = time.perf_counter()
            if iteration == t.iters:
                break
        epoch += 1

    last = history[-1]
    summary = {
        "name": spec.name,
        "status": "completed",
        "iterations": iteration,
        "final_accuracy": last["accuracy"],
        "final_loss": last["loss"],
        "best_accuracy": max(r["accuracy"] for r in history),
        "wall_seconds": round(time.time() - started, 3),
        "train_seconds": round(train_seconds, 3),
        "device": device.type,
        "workers": hooks.world_size,
        "params": params,
    }
    if rank0 and run:
        rundir.write_summary(run, summary)
    return summary
