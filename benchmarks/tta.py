"""`make bench-tta`: time to accuracy, side by side on this machine, as MLPerf Training times its entries.

    python benchmarks/tta.py [--rounds 3] [--target 98.0] [--preset jobs/fast.yaml ...] [--iters 3000]

Contenders, each evaluated on the test set every `--every` iterations (500: the tutorial's schedule):
  tutorial   the tutorial's own pipeline (benchmarks/seed_baseline.py), model C, --iters iterations
  seed       rnnjob run jobs/model_c.yaml: the tutorial's recipe, --iters iterations
  PRESET     rnnjob run PRESET (each --preset; jobs/fast.yaml by default), its own train.iters

Each round runs every contender once, at the round's seed, in an order that alternates between rounds.
A contender's time to a target is the wall-clock seconds from its launch to the end of its first
evaluation that reached the target: start-up, data loading and evaluations included. Two targets:
the tutorial's own final accuracy in that round (what its 3000 iterations give), and --target.
Prints the medians over the rounds in which a contender reached the target (and in how many it did),
and writes every evaluation of every run to benchmarks/results/tta-<device>-<time>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bench

ROOT = bench.ROOT


def command(contender: str, args, seed: int, out: Path) -> list[str]:
    """bench.py's commands for the tutorial (a) and its recipe in rnnjob (b), on this benchmark's schedule."""
    if contender == "tutorial":
        return bench.command("a", args.iters, seed, args.device, out) + ["--eval-every", str(args.every)]
    schedule = ["--set", f"train.eval_every={args.every}"]
    if contender == "seed":
        return bench.command("b", args.iters, seed, args.device, out) + schedule
    iters = ["--iters", str(args.preset_iters)] if args.preset_iters else []
    return [str(bench.BIN / "rnnjob"), "run", contender, *iters, "--seed", str(seed), "--out", str(out),
            "--device", args.device, *schedule]


def evaluations(contender: str, args, seed: int) -> list[dict]:
    """One run: each evaluation's iteration, test accuracy and seconds since the launch."""
    with tempfile.TemporaryDirectory(prefix="tta-") as out:
        out = Path(out)
        marks = out / "timeline.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env["RNNJOB_TIMELINE"] = str(marks)
        launched = time.time()
        done = subprocess.run(command(contender, args, seed, out), capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            raise SystemExit(f"tta: {contender} failed (exit {done.returncode}):\n{output}")
        if contender == "tutorial":
            records = json.loads(done.stdout.strip().splitlines()[-1])["evaluations"]
            return [{"iteration": r["iteration"], "accuracy": r["accuracy"], "seconds": r["t"] - launched}
                    for r in records]
        (run,) = [p.parent for p in out.glob("*/metrics.jsonl")]
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        ends = [m["t"] for m in map(json.loads, marks.read_text().splitlines()) if m["what"] == "evaluation reported"]
        if len(ends) != len(records):  # one mark per evaluation, in order
            raise SystemExit(f"tta: {contender}: {len(records)} evaluations but {len(ends)} timeline marks")
        return [{"iteration": r["iteration"], "accuracy": r["accuracy"], "seconds": t - launched}
                for r, t in zip(records, ends)]


def first_reaching(evals: list[dict], target: float):
    return next((e for e in evals if e["accuracy"] >= target), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--target", type=float, default=98.0, help="test accuracy (%%) every contender is timed to")
    parser.add_argument("--preset", action="append", help="a job file timed as rnnjob run runs it (repeatable)")
    parser.add_argument("--iters", type=int, default=3000, help="iterations of the tutorial and the seed recipe")
    parser.add_argument("--preset-iters", type=int, help="override the presets' train.iters (a quick check)")
    parser.add_argument("--every", type=int, default=500, help="iterations between evaluations, for every contender")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    presets = [str(Path(p).resolve()) for p in (args.preset or [str(ROOT / "jobs" / "fast.yaml")])]
    for p in presets:
        if not Path(p).is_file():
            parser.error(f"--preset: {p} is not a file")
    if args.rounds < 1:
        parser.error(f"--rounds: expected at least 1, got {args.rounds}")
    contenders = ["tutorial", "seed", *presets]
    runs = {c: [] for c in contenders}
    for r in range(args.rounds):
        seed = args.first_seed + r
        for c in contenders if r % 2 == 0 else contenders[::-1]:
            runs[c].append({"seed": seed, "evaluations": evaluations(c, args, seed)})
            last = runs[c][-1]["evaluations"][-1]
            print(f"round {r + 1}/{args.rounds} {name(c)}: {last['accuracy']:.2f}% at iteration {last['iteration']}, "
                  f"{last['seconds']:.1f} s", flush=True)
    own = [t["evaluations"][-1]["accuracy"] for t in runs["tutorial"]]  # the tutorial's final accuracy, per round
    table = {}
    for c in contenders:
        row = {}
        for key, targets in (("tutorial_final", own), ("target", [args.target] * args.rounds)):
            hits = [first_reaching(run["evaluations"], t) for run, t in zip(runs[c], targets)]
            reached = [h for h in hits if h]
            row[key] = {"reached": len(reached), "rounds": args.rounds,
                        "median_seconds": statistics.median(h["seconds"] for h in reached) if reached else None,
                        "median_iteration": statistics.median(h["iteration"] for h in reached) if reached else None}
        table[name(c)] = row
    print(f"time to accuracy, seconds from launch (evaluations every {args.every} iterations, included), "
          f"median of the rounds that reached it; seeds {args.first_seed}-{args.first_seed + args.rounds - 1}")
    print(f"{'contender':<32}{'to the tutorial final (' + format(statistics.median(own), '.2f') + '%)':>40}"
          f"{'to ' + format(args.target, '.1f') + '%':>28}")
    for c, row in table.items():
        cells = [f"{r['median_seconds']:.1f} s (it. {r['median_iteration']:.0f}, {r['reached']}/{r['rounds']})"
                 if r["reached"] else f"not reached (0/{r['rounds']})" for r in (row["tutorial_final"], row["target"])]
        print(f"{c:<32}{cells[0]:>40}{cells[1]:>28}")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"tta-{args.device}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": bench.machine(args.device), "target": args.target, "every": args.every,
                               "iters": args.iters, "rounds": args.rounds, "first_seed": args.first_seed,
                               "tutorial_final": own, "table": table,
                               "runs": {name(c): v for c, v in runs.items()}}, indent=2) + "\n")
    print(f"wrote {out}")


def name(contender: str) -> str:
    if contender == "tutorial":
        return "tutorial pipeline"
    if contender == "seed":
        return "rnnjob run, the seed's recipe"
    return f"rnnjob run {os.path.relpath(contender, ROOT)}"


if __name__ == "__main__":
    main()
