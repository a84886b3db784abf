"""`make bench-accuracy`: what each shipped job reaches. Runs `rnnjob run JOB --seed S --device cpu` for every
job file named (default: the tutorial's models, their tuned recipes and the presets), one after another, and
writes each run's figures (final and best test accuracy, training and wall seconds, threads, parameters) and
the machine's description to benchmarks/results/accuracy-cpu-<time>.json, after every run; prints them as a table.

    python benchmarks/accuracy.py [--seeds 0] [--jobs model_a,model_b,...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("model_a", "model_b", "model_c", "model_c_tuned", "lstm", "gru", "fast", "best")


def run(job: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="accuracy-") as out:
        started = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).parent / "rnnjob"), "run", str(ROOT / "jobs" / f"{job}.yaml"),
                               "--seed", str(seed), "--device", "cpu", "--out", out], capture_output=True, text=True,
                              env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, cwd=ROOT)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"accuracy: {job} at seed {seed} failed:\n{done.stderr[-2000:]}")
        summary = json.loads((Path(out) / job / "summary.json").read_text())
    keep = ("final_accuracy", "best_accuracy", "iterations", "train_seconds", "threads", "params", "reached_target")
    return {"job": job, "seed": seed, "wall_seconds": round(wall, 1), **{k: summary.get(k) for k in keep}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, each job at each")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names from jobs/")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"accuracy-cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine, rows = bench.machine("cpu"), []
    for job in args.jobs.split(","):
        for seed in seeds:
            rows.append(run(job, seed))
            r = rows[-1]
            print(f"| `{job}.yaml` | {seed} | {r['final_accuracy']:.2f}% | {r['best_accuracy']:.2f}% | "
                  f"{r['iterations']} | {r['train_seconds']:.1f} | {r['threads']} | {r['params']:,} |", flush=True)
            # after every run: a run stopped part-way keeps what it measured
            out.write_text(json.dumps({"machine": machine, "runs": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
