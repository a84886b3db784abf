"""This checkout against another one, variant by variant, alternating: what a change costs per step.

    python benchmarks/ab.py OTHER_CHECKOUT [--rounds 3] [--only b,c] [--iters 3000]

OTHER_CHECKOUT is a folder with its own `.venv` (e.g. `git worktree add /tmp/before <commit>`, then
`make setup` there). Each round runs every chosen variant of benchmarks/bench.py (b: rnnjob run,
c: rnnjob submit --workers 1, ...) once with the other checkout and once with this one, alternating
which goes first, at the round's seed. Prints each side's median seconds per optimizer step (the
training loop's seconds over the iterations) and the median of the per-round ratios, this checkout
over the other; writes the rounds to benchmarks/results/ab-<time>.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import bench

HERE = bench.ROOT


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="b,c")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--results", default=str(HERE / "benchmarks" / "results"))
    args = parser.parse_args()
    other = args.other.resolve()
    if not (other / ".venv" / "bin" / "python").exists():
        parser.error(f"{other}: no .venv/bin/python there (make setup in it first)")
    sides = {"other": other, "this": HERE}
    chosen = [v for v in args.only.split(",") if v in "bcd"]  # the variants that need no running head
    runs = {v: {side: [] for side in sides} for v in chosen}
    for r in range(args.rounds):
        order = ["other", "this"] if r % 2 == 0 else ["this", "other"]
        for v in chosen:
            for side in order:
                bench.ROOT, bench.BIN = sides[side], sides[side] / ".venv" / "bin"
                m = bench.measure(v, args.iters, r, "cpu")
                runs[v][side].append({"seed": r, **m, "seconds_per_step": m["train_seconds"] / args.iters})
                print(f"round {r + 1}/{args.rounds} ({v}) {side}: {m['train_seconds']:.2f} s loop", flush=True)
    summary = {}
    for v in chosen:
        per_step = {side: statistics.median(x["seconds_per_step"] for x in runs[v][side]) for side in sides}
        ratio = statistics.median(a["seconds_per_step"] / b["seconds_per_step"]
                                  for a, b in zip(runs[v]["this"], runs[v]["other"]))
        summary[v] = {"ms_per_step_other": 1000 * per_step["other"], "ms_per_step_this": 1000 * per_step["this"],
                      "ratio_this_to_other": ratio}
        print(f"({v}) {bench.VARIANTS[v]}: {1000 * per_step['other']:.2f} ms/step ({other}) vs "
              f"{1000 * per_step['this']:.2f} ms/step (this checkout), per-round ratio {ratio:.3f}")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"ab-cpu-{args.iters}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": bench.machine("cpu"), "other": str(other), "this": str(HERE),
                               "iters": args.iters, "rounds": args.rounds,
                               "summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
