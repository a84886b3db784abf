"""What watching a job costs per training step, measured inside one process (issue 12's 2% limit).

    python benchmarks/watch_cost.py [--rounds 6] [--iters 1000]

Between processes this VM's per-step time varies by up to 5% (benchmarks/ab.py), more than the limit
it checks. Here one process trains model C again and again (rnnjob's own loop, `loop.fit`, the same
spec and seed each time, one evaluation at the end) under three settings, in an order that rotates
every round:
  off     no run directory: no publishers (what rnnjob did before issue 12, less the checkpoint)
  files   a run directory: progress.json and TensorBoard's event files (`rnnjob run`)
  ray     files and Ray's live metrics (`ray_train.RayMetrics`, as on a Ray Train worker; this
          process joins an embedded Ray for it)
Prints each setting's median seconds per step (the loop's training seconds over the iterations,
evaluation excluded) and the median over rounds of its ratio to `off`; writes the rounds to
benchmarks/results/watch-cost-<time>.json.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import bench

ROOT = bench.ROOT


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    from rnn_mnist import rayenv

    rayenv.configure()  # before ray: loopback, tokens
    import ray
    import torch

    from rnn_mnist import loop, ray_train, sweep
    from rnn_mnist.kernels import process

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    process.tune("cpu")  # as `rnnjob run`: torch's own thread count, glibc keeping freed blocks
    overrides = [f"train.iters={args.iters}", f"train.eval_every={args.iters}", f"data.root={ROOT / 'data'}"]
    spec = sweep.load_any(ROOT / "jobs" / "model_c.yaml", overrides)
    settings = ["off", "files", "ray"]
    runs = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings[r % 3:] + settings[:r % 3]:
            with tempfile.TemporaryDirectory(prefix="watch-cost-") as d:
                run = None if s == "off" else d
                extra = [ray_train.RayMetrics("watch-cost", 0)] if s == "ray" else []
                done = loop.fit(spec, torch.device("cpu"), run, loop.Hooks(), publishers=extra)
            runs[s].append(done.train_seconds / args.iters)
            print(f"round {r + 1}/{args.rounds} {s}: {1000 * runs[s][-1]:.3f} ms/step", flush=True)
    ray.shutdown()
    summary = {}
    for s in settings:
        ratio = statistics.median(a / b for a, b in zip(runs[s], runs["off"]))
        summary[s] = {"ms_per_step": 1000 * statistics.median(runs[s]), "ratio_to_off": ratio}
        print(f"{s:<6} {summary[s]['ms_per_step']:.3f} ms/step, per-round ratio to off {ratio:.4f}")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"watch-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": bench.machine("cpu"), "iters": args.iters, "rounds": args.rounds,
                               "summary": summary, "seconds_per_step": runs}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
