"""What a training process publishes while it trains, besides checkpoints: a second, read-only view
of the same numbers. Nothing depends on it.

Every `loop.TICK_EVERY` steps the loop hands each publisher a tick (iteration, loss, learning rate,
seconds per step, samples per second), and after each evaluation the evaluation's record:

- `ProgressFile`: `<run>/progress.json`, at most once a second, for `rnnjob watch` and the bar of
  `rnnjob submit`;
- `TensorBoard`: event files in the run directory, written by tensorboardX
  (`tensorboard --logdir runs` shows every run below runs/);
- Ray's metrics (`ray_train.RayMetrics`), on a Ray Train worker.
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Optional

from . import rundir, storage


class Publisher:
    """Receives a tick every few steps and every evaluation's record; does nothing by default."""

    def steps(self, tick: dict) -> None:
        """tick: iteration, loss, lr, seconds_per_step, samples_per_second (this worker's)."""

    def evaluation(self, record: dict) -> None:
        """record: iteration, loss, accuracy, elapsed (as in metrics.jsonl)."""

    def close(self) -> None:
        """The run ended, one way or another."""


class Every:
    """The clock of something done at most once every `period` seconds: `due` says whether the period
    has passed since it was last `done` (at first it is due)."""

    def __init__(self, period: float):
        self.period, self.last = period, None

    def due(self) -> bool:
        return self.last is None or time.monotonic() - self.last >= self.period

    def done(self) -> None:
        self.last = time.monotonic()


class ProgressFile(Publisher):
    """Where the run stands between evaluations, rewritten whole at most every second (10 s on an
    object store, which bills every write)."""

    def __init__(self, run: str, iters: int):
        self.place = storage.join(run, rundir.PROGRESS)
        self.clock = Every(10.0 if storage.is_uri(run) else 1.0)
        self.state = {"iters": iters, "accuracy": None}

    def steps(self, tick):
        self.state.update(tick)
        if self.clock.due():
            self._write()

    def evaluation(self, record):
        self.state.update(iteration=record["iteration"], loss=record["loss"], accuracy=record["accuracy"])
        self._write()

    def _write(self):
        self.clock.done()
        storage.write_bytes(self.place, json.dumps({**self.state, "updated": time.time()}).encode())


class Callback(Publisher):
    """Hands each tick to a function (the progress bar of `rnnjob run`)."""

    def __init__(self, fn):
        self.fn = fn

    def steps(self, tick):
        self.fn(tick)


@contextlib.contextmanager
def following(run: str, fn, period: float = 0.5):
    """While inside, call fn with <run>/progress.json whenever it changes, from a thread: the bar of a
    driver whose workers train elsewhere."""
    done = threading.Event()

    def poll():
        last = None
        while not done.wait(period):
            now = read_progress(run)
            if now and now != last:
                fn(now)
                last = now

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def read_progress(run) -> Optional[dict]:
    place = storage.join(run, rundir.PROGRESS)
    try:
        return json.loads(storage.read_bytes(place)) if storage.exists(place) else None
    except (OSError, ValueError):  # being replaced right now, or damaged: the next look will tell
        return None


class TensorBoard(Publisher):
    """Scalars for TensorBoard in the run directory: train/loss, train/lr, train/samples_per_second,
    train/seconds_per_step every tick, test/accuracy and test/loss at each evaluation.

    Ticks reach the writer in batches, every `FLUSH_S` seconds (the writer's own flush period: TensorBoard
    sees nothing sooner anyway) and at each evaluation: its thread then wakes a few times a minute
    rather than at every tick, beside the training threads (benchmarks/README.md, issue 12).

    A run directory on an object store gets the event files copied up at each evaluation (they are
    written locally first: TensorBoard's writers append). A job carried on from a checkpoint purges
    the steps after it that an earlier attempt had written (TensorBoard's purge_step)."""

    FLUSH_S = 10.0

    def __init__(self, run: str, resumed_at: int = 0):
        from tensorboardX import SummaryWriter  # comes with ray[train]; only rank 0 with a run needs it

        self.run = run
        self.ticks, self.clock = [], Every(self.FLUSH_S)
        self.local = tempfile.mkdtemp(prefix="rnnjob-tb-") if storage.is_uri(run) else run
        # a file of its own, named in the order the attempts began (tensorboardX names files by the second, and
        # TensorBoard reads a folder's files in name order): the steps an earlier attempt wrote after the
        # checkpoint this one starts from are then dropped (purge_step), not this attempt's
        self.writer = SummaryWriter(logdir=self.local, purge_step=resumed_at + 1 if resumed_at else None,
                                    flush_secs=self.FLUSH_S,
                                    filename_suffix=f".{time.time_ns()}.{uuid.uuid4().hex[:4]}")

    def steps(self, tick):
        self.ticks.append(tick)
        if self.clock.due():
            self._hand_over()

    def _hand_over(self):
        for tick in self.ticks:
            step = tick["iteration"]
            self.writer.add_scalar("train/loss", tick["loss"], step)
            self.writer.add_scalar("train/lr", tick["lr"], step)
            self.writer.add_scalar("train/samples_per_second", tick["samples_per_second"], step)
            self.writer.add_scalar("train/seconds_per_step", tick["seconds_per_step"], step)
        self.ticks = []
        self.clock.done()

    def evaluation(self, record):
        self._hand_over()
        self.writer.add_scalar("test/accuracy", record["accuracy"], record["iteration"])
        self.writer.add_scalar("test/loss_at_evaluation", record["loss"], record["iteration"])
        self.writer.flush()
        self._upload()

    def close(self):
        self._hand_over()
        self.writer.close()
        self._upload()
        if self.local != self.run:
            shutil.rmtree(self.local, ignore_errors=True)

    def _upload(self):
        if self.local == self.run:
            return
        for name in os.listdir(self.local):
            if name.startswith("events.out.tfevents"):
                with open(os.path.join(self.local, name), "rb") as f:
                    storage.write_bytes(storage.join(self.run, name), f.read())


def write_hparams(run: str, values: dict, final_accuracy: Optional[float], best_accuracy: Optional[float]) -> None:
    """A grid trial's hyperparameters and outcome for TensorBoard's hparams plugin, in `<run>/hparams`."""
    from tensorboardX import SummaryWriter

    local = tempfile.mkdtemp(prefix="rnnjob-hparams-")
    try:
        with SummaryWriter(logdir=local) as writer:
            metrics = {"hparam/final_accuracy": final_accuracy or 0.0, "hparam/best_accuracy": best_accuracy or 0.0}
            writer.add_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()},
                               metrics, name="hparams")
        storage.make_new_dir(storage.join(run, "hparams"))
        for name in os.listdir(os.path.join(local, "hparams")):
            with open(os.path.join(local, "hparams", name), "rb") as f:
                storage.write_bytes(storage.join(run, "hparams", name), f.read())
    finally:
        shutil.rmtree(local, ignore_errors=True)


def for_run(run: Optional[str], iters: int, resumed_at: int, rank: int) -> list:
    """The publishers of one training process: a run directory's files, on rank 0 only."""
    if rank != 0 or not run:
        return []
    return [ProgressFile(run, iters), TensorBoard(run, resumed_at)]
