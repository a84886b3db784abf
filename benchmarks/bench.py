"""`make bench`: rnnjob against the tutorial's own pipeline, side by side on this machine.

Variants, each in its own process, alternating round by round (a b c ... g a b c ...):
  (a) the tutorial's pipeline (benchmarks/seed_baseline.py)
  (b) rnnjob run               (c) rnnjob submit --workers 1               (d) rnnjob submit --workers 2
  (e) rnnjob submit --workers 1 --address a Ray head that runs already (cluster/local.sh, started once)
  (f) the tutorial wrapped in Ray Train by hand (benchmarks/tutorial_ray_train.py, embedded Ray)
  (g) the grid jobs/compare_abc.yaml (models A, B, C) --address that running head
  (h) Ray Train's floor: a plain driver submitting a TorchTrainer of one worker that imports torch, reports
      once and returns, to that running head (benchmarks/ray_train_floor.py): the least any Ray Train job pays
  (i) a grid of 12 single-worker trials (benchmarks/grid_12.yaml, one tanh layer) --address that head
  (j) rnnjob run into s3:// on an S3 server on 127.0.0.1 (moto's, started once): the bucket's cost against (b)
all model C (g: A, B and C; i: one tanh layer), the same data, round r with seed first-seed + r for every
variant. Reports medians of the timed rounds: wall seconds, training-loop seconds, samples per second,
peak resident memory of the process tree, final accuracy, and each wall time as a ratio to (a): the ratio
of the medians, and the median of the ratios within each round (this VM's speed drifts by tens of percent over
minutes; neighbours in time see the same drift). Then (a) and (b) alone, alternating, at the next
seeds up to --accuracy-seeds (default 10): one seed's accuracy is a draw, and the accuracy target is
judged over all of them. Last, every seed's final accuracy and, for a run of 3000 iterations, each
target (benchmarks/README.md) as met or NOT MET (also in the JSON, under "targets"). The rnnjob
variants run with $RNNJOB_TIMELINE set, for the seconds from the command's start to its first
training step.

    python benchmarks/bench.py [--rounds N] [--accuracy-seeds M] [--iters 3000] [--device cpu|cuda]
                               [--only a,b] [--first-seed S]
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BATCH = 100
VARIANTS = {
    "a": "tutorial pipeline",
    "b": "rnnjob run",
    "c": "rnnjob submit --workers 1",
    "d": "rnnjob submit --workers 2",
    "e": "submit -w 1, running head",
    "f": "tutorial in Ray Train",
    "g": "grid compare_abc, running head",
    "h": "Ray Train floor, running head",
    "i": "grid of 12 trials, running head",
    "j": "rnnjob run into S3 (loopback)",
}
ON_HEAD = "eghi"  # the variants that need a running cluster (cluster/local.sh, started once for the run)
GRIDS = {"g": ROOT / "jobs" / "compare_abc.yaml", "i": ROOT / "benchmarks" / "grid_12.yaml"}
TARGET_ITERS = 3000  # the targets are set for the full run


def verdicts(medians: dict, device: str, accuracy: dict) -> list[tuple[str, str, bool]]:
    """Each target whose variants ran: (target, the measured figures, met?).
    accuracy: each variant's final accuracies, one per seed, (a) and (b) over the same seeds."""
    m, out = medians, []
    if device == "cuda":
        if "b" in m:  # one H200: the whole training loop under 5 s
            out.append(("(b) training loop < 5 s", f"{m['b']['train_seconds']:.2f} s", m["b"]["train_seconds"] < 5))
        return out
    if "a" in m and "b" in m:
        out.append(("(b) wall <= 0.40x (a)", f"{m['b']['wall_ratio_to_a']:.2f}x", m["b"]["wall_ratio_to_a"] <= 0.40))
        a_acc, b_acc = statistics.median(accuracy["a"]), statistics.median(accuracy["b"])
        out.append(("(b) accuracy >= (a) - 0.5", f"{b_acc:.2f} vs {a_acc:.2f}, {len(accuracy['b'])} seeds",
                    b_acc >= a_acc - 0.5))
        # measured side by side, against the tutorial's own peak (the same torch build and libraries)
        out.append(("(b) peak <= (a) peak", f"{m['b']['peak_rss_mb']:.0f} vs {m['a']['peak_rss_mb']:.0f} MiB",
                    m["b"]["peak_rss_mb"] <= m["a"]["peak_rss_mb"]))
    if "a" in m and "c" in m:
        out.append(("(c) wall <= 0.90x (a)", f"{m['c']['wall_ratio_to_a']:.2f}x", m["c"]["wall_ratio_to_a"] <= 0.90))
    # what a submitted job adds to Ray Train's own floor, against rnnjob run in the same round
    if "e" in m and "b" in m:
        e = m["e"]
        if "h" in m:
            over = m["e"]["beyond_floor_ratio_to_b"]
            out.append(("(e) - (h) <= 1.1x (b), per round", f"{over:.2f}x", over <= 1.1))
        out.append(("(e) loop s within 10% of (b)", f"{e['train_ratio_to_b']:.3f}x",
                    abs(e["train_ratio_to_b"] - 1) <= 0.10 + 1e-9))
    if "j" in m and "b" in m:  # the bucket's cost: the same run into an S3 server on loopback, each round
        out.append(("(j) wall <= 1.1x (b), per round", f"{m['j']['round_ratio_to_b']:.3f}x",
                    m["j"]["round_ratio_to_b"] <= 1.1))
    for v, limit in (("g", 1.25), ("i", 1.2)):  # a grid should cost about its training, not a start per trial
        if v in m:
            bound = m[v]["train_seconds"] / m[v]["at_once"]
            out.append((f"({v}) wall <= {limit}x loop s / at once", f"{m[v]['wall_seconds']:.1f} vs {bound:.1f} s",
                        m[v]["wall_seconds"] <= limit * bound))
    return out


def command(variant: str, iters: int, seed: int, device: str, out, head=None) -> list[str]:
    """out: a local folder, or (j) an s3:// URI."""
    where = ["--set", f"output.storage={out}"] if variant == "j" else ["--out", str(out)]
    job = [str(GRIDS.get(variant, ROOT / "jobs" / "model_c.yaml")), "--iters", str(iters), "--seed", str(seed),
           *where]
    gpu = ["--gpu"] if device == "cuda" else []
    if variant == "a":
        return [str(BIN / "python"), str(ROOT / "benchmarks" / "seed_baseline.py"), "--root", str(ROOT / "data"),
                "--iters", str(iters), "--seed", str(seed), "--device", device]
    if variant == "f":
        return [str(BIN / "python"), str(ROOT / "benchmarks" / "tutorial_ray_train.py"), "--root", str(ROOT / "data"),
                "--iters", str(iters), "--seed", str(seed)] + (["--gpu"] if device == "cuda" else [])
    if variant == "h":
        return [str(BIN / "python"), str(ROOT / "benchmarks" / "ray_train_floor.py"), "--address", head.address]
    if variant in "bj":
        return [str(BIN / "rnnjob"), "run", *job, "--device", device]
    if variant in GRIDS:
        return [str(BIN / "rnnjob"), "submit", *job, "--address", head.address, *gpu]
    workers = "2" if variant == "d" else "1"
    where = ["--address", head.address] if variant == "e" else []
    return [str(BIN / "rnnjob"), "submit", *job, "--workers", workers, *where, *gpu]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A running Ray head from cluster/local.sh with every CPU of this machine, on free ports of
    127.0.0.1, its state in a folder of its own; `down` ends it as local.sh does. address: one that runs
    already (HOST:PORT of its GCS), used as it is and left running.

    Its Ray temp folder is its own too: `ray start` records the head's address there, and (f), the
    tutorial's own `ray.init()`, would join the cluster recorded in Ray's default one (/tmp/ray) instead
    of starting the Ray of its own that it measures."""

    def __init__(self, address=None):
        self.address, self.env = address, None
        if address:
            return
        self.state = tempfile.mkdtemp(prefix="bench-cluster-")
        os.rmdir(self.state)  # local.sh makes it itself, 0700
        self.temp = tempfile.mkdtemp(prefix="rnnjob-bench-head-")  # short: Ray's sockets live below it
        port = free_port()
        self.env = {**os.environ, "RNNJOB_CLUSTER_STATE": self.state, "RNNJOB_CLUSTER_PORT": str(port),
                    "RNNJOB_CLUSTER_DASHBOARD_PORT": str(free_port()),
                    "RNNJOB_CLUSTER_AGENT_PORT": str(free_port()), "RAY": str(BIN / "ray"), "RAY_TMPDIR": self.temp}
        subprocess.run([str(ROOT / "cluster" / "local.sh"), "up", "--cpus", str(os.cpu_count())], env=self.env,
                       check=True, stdout=subprocess.DEVNULL)
        self.address = f"127.0.0.1:{port}"

    def down(self):
        if self.env:
            subprocess.run([str(ROOT / "cluster" / "local.sh"), "down"], env=self.env, check=False,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(self.temp, ignore_errors=True)


class S3:
    """An S3 server on a free port of 127.0.0.1 with a bucket `bench`, from cluster/s3.sh (moto's, as `make
    s3-up` starts it), its state in a folder of its own; `down` ends it as s3.sh does. env: the standard
    AWS variables that point rnnjob at it, as s3.sh prints them."""

    def __init__(self):
        self.state = tempfile.mkdtemp(prefix="bench-s3-")
        os.rmdir(self.state)  # s3.sh makes it itself, 0700
        self.script_env = {**os.environ, "RNNJOB_S3_STATE": self.state, "PYTHON": sys.executable}
        up = subprocess.run([str(ROOT / "cluster" / "s3.sh"), "up", "--port", str(free_port()), "--bucket", "bench"],
                            env=self.script_env, check=True, capture_output=True, text=True)
        exports = next(line for line in up.stdout.splitlines() if "export AWS_ENDPOINT_URL=" in line)
        self.env = {**dict(pair.split("=", 1) for pair in exports.split("export", 1)[1].split()),
                    "AWS_EC2_METADATA_DISABLED": "true"}

    def down(self):
        subprocess.run([str(ROOT / "cluster" / "s3.sh"), "down"], env=self.script_env, check=False,
                       stdout=subprocess.DEVNULL)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a process that ended between listing and reading
            pass
    return total


def measure(variant: str, iters: int, seed: int, device: str, head=None, s3=None) -> dict:
    """One run of one variant in a fresh process: its wall time, peak tree memory and own figures."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        place = out
        if variant == "j":
            env.update(s3.env)
            place = f"s3://bench/{Path(out).name}"
        marks = Path(out) / "timeline.jsonl"
        env["RNNJOB_TIMELINE"] = str(marks)  # rnn_mnist/timeline.py: when the first step was done
        if variant in "fh":  # on loopback (../shared/RAY-NOTES.md), as rnnjob's own processes are
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if variant == "h":  # a plain driver sends the head's token only in token mode
            env["RAY_AUTH_MODE"] = "token"
        started = time.perf_counter()
        proc = subprocess.Popen(command(variant, iters, seed, device, place, head), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        watched, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(watched))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        output = proc.stdout.read()
        if proc.returncode != 0:
            raise SystemExit(f"bench: variant {variant} failed (exit {proc.returncode}):\n{output[-2000:]}")
        extra = {}
        if variant == "h":  # no training: the wall time is the figure
            return {"wall_seconds": wall, "peak_rss_mb": peak / 2**20}
        if variant in "af":
            figures = json.loads(output.strip().splitlines()[-1])
        elif variant in GRIDS:
            trials = [json.loads(p.read_text()) for p in (Path(out) / GRIDS[variant].stem).glob("*/summary.json")]
            at_once = int(re.search(r"(\d+) at a time", output).group(1))
            figures = {"train_seconds": sum(t["train_seconds"] for t in trials),
                       "final_accuracy": max(t["final_accuracy"] for t in trials)}
            extra = {"trials": len(trials), "at_once": at_once}
        elif variant == "j":
            from rnn_mnist import rundir

            os.environ.update(s3.env)
            figures = rundir.read_summary(f"{place}/model_c").to_dict()
        else:
            figures = json.loads((Path(out) / "model_c" / "summary.json").read_text())
        if marks.exists():
            lines = [json.loads(line) for line in marks.read_text().splitlines()]
            when = {m["what"]: m["t"] for m in reversed(lines)}  # the first of each
            if "first step done" in when:
                extra["to_first_step_seconds"] = when["first step done"] - when["driver process started"]
    samples = iters * BATCH * extra.get("trials", 1)
    return {"wall_seconds": wall, "train_seconds": figures["train_seconds"],
            "samples_per_second": samples / figures["train_seconds"],
            "peak_rss_mb": peak / 2**20, "final_accuracy": figures["final_accuracy"], **extra}


def machine(device: str) -> dict:
    import torch
    try:  # (a) and (b) need no Ray: a GPU machine without it can still run them
        import ray
    except ImportError:
        ray = None

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray and ray.__version__, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table(medians: dict, rounds: int, iters: int) -> str:
    base = medians["a"]["wall_seconds"] if "a" in medians else None
    head = (f"{'variant':<35}{'wall s':>9}{'loop s':>9}{'samples/s':>11}{'peak MB':>9}{'acc %':>8}{'vs (a)':>8}"
            f"{'per round':>11}{'vs (b)':>8}{'1st step':>9}")
    lines = [f"model C, {iters} iterations, median of {rounds} round(s)", head]
    for key, m in medians.items():
        ratio = f"{m['wall_seconds'] / base:.2f}x" if base else "-"
        per_round = f"{m['round_ratio_to_a']:.2f}x" if base else "-"
        to_b = f"{m['round_ratio_to_b']:.2f}x" if "round_ratio_to_b" in m else "-"
        first = f"{m['to_first_step_seconds']:.1f}" if "to_first_step_seconds" in m else "-"
        trained = (f"{m['train_seconds']:>9.1f}{m['samples_per_second']:>11.0f}" if "train_seconds" in m
                   else f"{'-':>9}{'-':>11}")
        accuracy = f"{m['final_accuracy']:>8.2f}" if "final_accuracy" in m else f"{'-':>8}"
        lines.append(f"({key}) {VARIANTS[key]:<31}{m['wall_seconds']:>9.1f}{trained}{m['peak_rss_mb']:>9.0f}"
                     f"{accuracy}{ratio:>8}{per_round:>11}{to_b:>8}{first:>9}")
    return "\n".join(lines)


def timed_rounds(args, chosen: list[str], head, s3=None) -> dict:
    """The rounds that are timed: every variant once per round, round r with seed first-seed + r."""
    runs = {v: [] for v in chosen}
    for r in range(args.rounds):
        seed = args.first_seed + r
        for v in chosen:
            runs[v].append({"seed": seed, **measure(v, args.iters, seed, args.device, head, s3)})
            print(f"round {r + 1}/{args.rounds} ({v}) {VARIANTS[v]}: {runs[v][-1]['wall_seconds']:.1f} s", flush=True)
    return runs


def accuracy_rounds(args, chosen: list[str]) -> dict:
    """(a) and (b) at the seeds after the timed rounds, up to --accuracy-seeds: accuracy only.

    Model C's final accuracy is one draw per seed (chaotic in float rounding; 30 seeds here spread
    with a standard deviation of about 2.5 points), so three seeds cannot tell two pipelines apart
    within 0.5 points: the comparison needs more seeds than the timings do."""
    extra = [v for v in chosen if v in "ab"]
    runs = {v: [] for v in extra}
    for seed in range(args.first_seed + args.rounds, args.first_seed + args.accuracy_seeds):
        for v in extra:
            runs[v].append({"seed": seed, **measure(v, args.iters, seed, args.device)})
            print(f"accuracy seed {seed} ({v}) {VARIANTS[v]}: {runs[v][-1]['final_accuracy']:.2f}", flush=True)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)), help="timed rounds")
    parser.add_argument("--accuracy-seeds", type=int, default=int(os.environ.get("BENCH_ACCURACY_SEEDS", 10)),
                        help="seeds over which (a) and (b)'s accuracy is compared (the timed rounds' seeds first)")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gpu", action="store_const", const="cuda", dest="device", help="same as --device cuda")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants to run, e.g. a,b")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first round")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON")
    parser.add_argument("--address", help="the running head of (e) and (g)-(i), HOST:PORT of its GCS (default: one "
                                          "started for the run with cluster/local.sh, with every CPU, ended after)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds: expected at least 1, got {args.rounds}")
    chosen = [v for v in args.only.split(",") if v in VARIANTS]

    head = Head(args.address) if any(v in ON_HEAD for v in chosen) else None
    s3 = S3() if "j" in chosen else None
    try:
        runs = timed_rounds(args, chosen, head, s3)
    finally:
        if head:
            head.down()
        if s3:
            s3.down()
    extra = accuracy_rounds(args, chosen)
    medians = {v: {k: statistics.median(run[k] for run in runs[v]) for k in runs[v][0] if k != "seed"}
               for v in chosen}
    for base in "ab":  # each wall time against the tutorial's (a) and against rnnjob run (b)
        if base not in medians:
            continue
        for v, m in medians.items():
            m[f"wall_ratio_to_{base}"] = m["wall_seconds"] / medians[base]["wall_seconds"]
            m[f"round_ratio_to_{base}"] = statistics.median(run["wall_seconds"] / other["wall_seconds"]
                                                            for run, other in zip(runs[v], runs[base]))
            if "train_seconds" in m:
                m[f"train_ratio_to_{base}"] = statistics.median(run["train_seconds"] / other["train_seconds"]
                                                                for run, other in zip(runs[v], runs[base]))
    if all(v in medians for v in "beh"):  # what a submit adds to Ray Train's floor, against run's wall
        medians["e"]["beyond_floor_ratio_to_b"] = statistics.median(
            (e["wall_seconds"] - h["wall_seconds"]) / b["wall_seconds"]
            for e, h, b in zip(runs["e"], runs["h"], runs["b"]))
    accuracy = {v: [run["final_accuracy"] for run in runs[v] + extra.get(v, [])] for v in chosen if v != "h"}
    print(table(medians, args.rounds, args.iters))
    for v in accuracy:  # each seed's accuracy is a draw: show them all
        seeds = f"seeds {args.first_seed}-{args.first_seed + len(accuracy[v]) - 1}"
        print(f"({v}) final accuracy, {seeds}: median {statistics.median(accuracy[v]):.2f}; "
              + " ".join(f"{a:.2f}" for a in accuracy[v]))
    judged = verdicts(medians, args.device, accuracy) if args.iters == TARGET_ITERS else []
    for target, figures, met in judged:
        print(f"target {target:<38} {figures:<28} {'met' if met else 'NOT MET'}")
    if args.iters != TARGET_ITERS:
        print(f"targets not judged: they are set for {TARGET_ITERS} iterations")

    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"bench-{args.device}-{args.iters}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(args.device), "iters": args.iters, "rounds": args.rounds,
                               "first_seed": args.first_seed, "variants": VARIANTS, "medians": medians,
                               "runs": runs, "accuracy_runs": extra, "accuracy": accuracy,
                               "targets": [{"target": t, "measured": f, "met": ok} for t, f, ok in judged]},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
