"""`make bench-overhead`: where a submitted job's wall time goes, against `rnnjob run`.

Starts a Ray head with `cluster/local.sh up --cpus 2` (its own state folder and free ports on
127.0.0.1), then alternates, round by round: `rnnjob run`, `rnnjob submit --workers 1 --address`
that head, and `rnnjob submit --workers 1` with its embedded Ray. Every contender runs with
$RNNJOB_TIMELINE set (rnn_mnist/timeline.py: the driver and each worker mark what they reach), while
every process's CPU time is sampled every 0.2 s, so that the report can say what the Ray processes
took from the training cores meanwhile. Prints, per contender, the median of each phase and writes
the rounds to benchmarks/results/overhead-<time>.json. The head is ended as it was started
(`cluster/local.sh down`).

    python benchmarks/overhead.py [--rounds 3] [--iters 3000] [--seed 0] [--only run,cluster,embedded]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bench  # its running head (cluster/local.sh), shared
import psutil

ROOT = bench.ROOT
CONTENDERS = {"run": "rnnjob run", "cluster": "rnnjob submit --workers 1 --address (running head)",
              "embedded": "rnnjob submit --workers 1 (embedded Ray)"}
# (phase, from mark, to mark): marks by the driver (d:) and by rank 0's worker process (w:)
PHASES = [
    ("driver start and imports", "d:driver process started", "d:driver imports done"),
    ("join or start Ray", "d:driver imports done", "d:ray"),
    ("checks, run directory", "d:ray", "d:fit called"),
    ("controller and worker start", "d:fit called", "w:worker process started"),
    ("worker imports, Ray Train and DDP set-up", "w:worker process started", "w:worker function entered"),
    ("model built and prepared", "w:worker function entered", "w:model ready"),
    ("data load", "w:model ready", "w:data loaded"),
    ("first step", "w:data loaded", "w:first step done"),
    ("training: steps", None, None),
    ("training: evaluations, reports, checkpoints", None, None),
    ("worker group and controller end", "w:loop ended", "d:fit returned"),
    ("summary", "d:fit returned", "d:summary written"),
    ("leave Ray", "d:summary written", "d:ray left"),
    ("exit", "d:ray left", "end"),
]
RUN_PHASES = {  # rnnjob run has no Ray: its marks come from the one process
    "join or start Ray": None, "checks, run directory": ("d:driver imports done", "w:model ready"),
    "controller and worker start": None, "worker imports, Ray Train and DDP set-up": None,
    "model built and prepared": None, "data load": ("w:model ready", "w:data loaded"),
    "worker group and controller end": None, "summary": ("w:loop ended", "d:summary written"), "leave Ray": None,
    "exit": ("d:summary written", "end"),
}


def command(contender: str, args, out: str, head) -> list[str]:
    """The command line of bench.py's variant for this contender: (b), (e) or (c)."""
    variant = {"run": "b", "cluster": "e", "embedded": "c"}[contender]
    return bench.command(variant, args.iters, args.seed, "cpu", Path(out), head)


SETTLED = {"Ray Train worker (training)", "Ray Train controller", "the rnnjob command (driver)"}


def kind(proc: psutil.Process, driver: int) -> "str | None":
    """What a process is, for the CPU table (None: not one of ours, a kernel thread, say). Ray names its
    worker processes after what they run (ray::RayTrainWorker, ray::IDLE) once they have started."""
    try:
        title = " ".join(proc.cmdline())
        if not title:
            return None
        if proc.pid == driver:
            return "the rnnjob command (driver)"
        name = proc.name()
    except psutil.Error:
        return None
    if "RayTrainWorker" in title:
        return "Ray Train worker (training)"
    if "TrainController" in title:
        return "Ray Train controller"
    if title.startswith("ray::"):
        return f"Ray: {title.split()[0].split('.')[0]}"
    if "default_worker.py" in title:
        return "Ray: a worker process, starting"
    if name.startswith("ray-dashboard") or "dashboard" in title:
        return "Ray: dashboard (head and its modules)"
    if "ray" in title:
        return f"Ray: {name}"
    return None


def measure(contender: str, args, head) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"overhead-{contender}-") as out:
        marks = os.path.join(out, "timeline.jsonl")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env["RNNJOB_TIMELINE"] = marks
        env.update(args.extra_env)
        cpu_before = {}
        for p in psutil.process_iter():
            try:
                cpu_before[p.pid] = sum(p.cpu_times()[:2])
            except psutil.Error:
                pass
        seen, kinds = {}, {}
        started = time.time()
        proc = subprocess.Popen(command(contender, args, os.path.join(out, "runs"), head), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        while proc.poll() is None:
            for p in psutil.process_iter():
                if p.pid == os.getpid():
                    continue
                what = kind(p, proc.pid)
                if what is None:
                    continue
                try:
                    seen[p.pid] = sum(p.cpu_times()[:2])
                except psutil.Error:
                    continue
                if kinds.get(p.pid) not in SETTLED:
                    # a worker takes its title once it has started, and a task's name while it runs one
                    # (ray::execute): keep the first title that says what the process is
                    kinds[p.pid] = what
            time.sleep(0.2)
        ended = time.time()
        output = proc.stdout.read()
        if proc.returncode != 0:
            raise SystemExit(f"overhead: {contender} failed (exit {proc.returncode}):\n{output[-2000:]}")
        summary = json.loads(next(Path(out, "runs").glob("*/summary.json")).read_text())
        lines = [json.loads(line) for line in Path(marks).read_text().splitlines()]
    cpu = {}
    for pid, total in seen.items():
        before = cpu_before.get(pid, 0.0)
        what = kinds[pid]
        cpu[what] = round(cpu.get(what, 0.0) + max(0.0, total - before), 2)
    return {"wall_seconds": ended - started, "started": started, "ended": ended, "marks": lines,
            "train_seconds": summary["train_seconds"], "final_accuracy": summary["final_accuracy"],
            "cpu_seconds": dict(sorted(cpu.items(), key=lambda kv: -kv[1]))}


def phases(contender: str, run: dict) -> dict:
    """Seconds per phase from one run's marks: the driver's (its first pid) and rank 0's worker's."""
    marks = run["marks"]
    driver = next(m["pid"] for m in marks if m["what"] == "driver process started")
    worker = next((m["pid"] for m in marks if m["what"] == "worker function entered"), driver)
    first = {}
    for m in marks:
        what = "ray" if m["what"] in ("ray joined", "ray started") else m["what"]
        for who, pid in (("d", driver), ("w", worker)):
            if m["pid"] == pid:
                first.setdefault(f"{who}:{what}", m["t"])
    first["end"] = run["ended"]
    evals = [m for m in marks if m["what"] in ("evaluation started", "evaluation reported") and m["pid"] == worker]
    eval_seconds = sum(b["t"] - a["t"] for a, b in zip(evals[::2], evals[1::2]))
    out = {}
    for name, a, b in PHASES:
        if contender == "run" and name in RUN_PHASES:
            if RUN_PHASES[name] is None:
                continue
            a, b = RUN_PHASES[name]
        if name == "training: steps":
            out[name] = first["w:loop ended"] - first["w:first step done"] - eval_seconds
        elif name == "training: evaluations, reports, checkpoints":
            out[name] = eval_seconds
        elif a in first and b in first:
            out[name] = first[b] - first[a]
    out["submit to first step"] = first["w:first step done"] - first["d:driver process started"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="run,cluster,embedded")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--address", help="a running head, HOST:PORT of its GCS (default: one started for the run)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every contender's environment (to try one), repeatable")
    args = parser.parse_args()
    args.extra_env = dict(item.split("=", 1) for item in args.env)
    chosen = [c for c in args.only.split(",") if c in CONTENDERS]
    head = bench.Head(args.address) if "cluster" in chosen else None
    runs = {c: [] for c in chosen}
    try:
        for r in range(args.rounds):
            for c in chosen:
                runs[c].append(measure(c, args, head))
                print(f"round {r + 1}/{args.rounds} {CONTENDERS[c]}: {runs[c][-1]['wall_seconds']:.1f} s", flush=True)
    finally:
        if head:
            head.down()
    table = {}
    for c in chosen:
        per_run = [phases(c, run) for run in runs[c]]
        names = [n for n in per_run[0]]
        table[c] = {n: statistics.median(p[n] for p in per_run if n in p) for n in names}
        table[c]["wall"] = statistics.median(run["wall_seconds"] for run in runs[c])
        table[c]["train_seconds (summary)"] = statistics.median(run["train_seconds"] for run in runs[c])
    print(f"\nmodel C, {args.iters} iterations, seed {args.seed}, median of {args.rounds} round(s), seconds")
    names = list(dict.fromkeys(n for c in chosen for n in table[c]))
    print(f"{'phase':<46}" + "".join(f"{c:>12}" for c in chosen))
    for n in names:
        print(f"{n:<46}" + "".join(f"{table[c][n]:>12.2f}" if n in table[c] else f"{'-':>12}" for c in chosen))
    for c in chosen:
        cpu = {}
        for run in runs[c]:
            for what, s in run["cpu_seconds"].items():
                cpu.setdefault(what, []).append(s)
        print(f"\nCPU seconds while {CONTENDERS[c]} ran (median per round):")
        for what, values in sorted(cpu.items(), key=lambda kv: -statistics.median(kv[1])):
            if statistics.median(values) >= 0.05:
                print(f"  {statistics.median(values):8.2f}  {what}")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"overhead-cpu-{args.iters}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": bench.machine("cpu"), "iters": args.iters, "seed": args.seed,
                               "rounds": args.rounds, "env": args.extra_env,
                               "contenders": CONTENDERS, "medians": table, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
