#!/usr/bin/env bash
# Everything rnnjob wants to know from a CUDA GPU, in one script of at most about 5 minutes:
#
#   benchmarks/gpu_check.sh [OUT.json]        (default benchmarks/results/gpu-check-<time>.json)
#
#   1. the tests that need a GPU (pytest -m gpu)
#   2. the tutorial's pipeline on the GPU, model C, 3000 iterations (benchmarks/seed_baseline.py)
#   3. rnnjob run --device cuda, model C, 3000 iterations (the goal: its training loop under 5 s)
#   4. rnnjob submit --gpu --workers 1, model C, 3000 iterations (needs Ray)
#   5. make bench's GPU variants that steps 2-4 leave out, one round (benchmarks/bench.py --gpu --only
#      b,e,f): rnnjob run beside submit to a running head (cluster/local.sh) and the tutorial wrapped
#      in Ray Train by hand; each one's wall, loop seconds and time to the first step (needs Ray)
#
# It runs with $PYTHON (default: .venv/bin/python if there is one, else python3) and records, for
# each step, its figures or why it did not run (no CUDA device, Ray missing, ...). Exit 0 when every
# step that could run passed; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
out=${1:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S).json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
export RNNJOB_MNIST_SOURCES=${RNNJOB_MNIST_SOURCES:-registry}

step() {  # name timeout command...: run it, keep its output and exit code
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  timeout "$limit" "$@" >"$work/$name.out" 2>&1
  echo $? >"$work/$name.rc"
  tail -n 3 "$work/$name.out" >&2
}

have_cuda=$("$python" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
have_ray=$("$python" -c 'import ray.train' >/dev/null 2>&1 && echo 1 || echo 0)
have_cli=$("$python" -c 'import rnn_mnist.cli' >/dev/null 2>&1 && echo 1 || echo 0)
job=(jobs/model_c.yaml --device cuda --out "$work/runs" --set "data.root=$PWD/data")

if [ "$have_cuda" = 1 ]; then
  "$python" -m rnn_mnist data fetch --root data >/dev/null 2>&1 || "$python" - <<'EOF' || true
from rnn_mnist import data
data.fetch("data")
EOF
  step tests 120 "$python" -m pytest -q -m gpu -p no:cacheprovider tests
  step tutorial 120 "$python" benchmarks/seed_baseline.py --root data --iters 3000 --device cuda
  if [ "$have_cli" = 1 ]; then
    step run 120 "$python" -m rnn_mnist run "${job[@]}"
  fi
  if [ "$have_cli" = 1 ] && [ "$have_ray" = 1 ]; then
    step submit 180 "$python" -m rnn_mnist submit jobs/model_c.yaml --gpu --workers 1 --out "$work/runs-ray" \
      --set "data.root=$PWD/data"
    step bench 240 "$python" benchmarks/bench.py --gpu --rounds 1 --accuracy-seeds 1 --only b,e,f \
      --results "$work/bench"
  fi
fi

"$python" - "$out" "$work" "$have_cuda" "$have_ray" "$have_cli" <<'EOF'
import json, platform, sys
from pathlib import Path

out, work, cuda, ray, cli = sys.argv[1], Path(sys.argv[2]), *(x == "1" for x in sys.argv[3:])


def outcome(name):
    rc = work / f"{name}.rc"
    if not rc.exists():
        return None
    return {"exit": int(rc.read_text()), "tail": (work / f"{name}.out").read_text()[-1500:]}


def summary(folder):
    found = sorted(Path(folder).glob("*/summary.json"))
    return json.loads(found[0].read_text()) if found else None


report = {"python": platform.python_version(), "cuda": cuda, "ray": ray, "rnnjob_cli": cli, "steps": {}}
try:
    import torch
    report["torch"] = torch.__version__
    report["gpu"] = torch.cuda.get_device_name(0) if cuda else None
except ImportError:
    report["torch"] = None
no_ray = "no CUDA device" if not cuda else "Ray (or rnnjob's dependencies) is not installed"
why_not = {"tests": "no CUDA device", "tutorial": "no CUDA device",
           "run": "no CUDA device" if not cuda else "rnnjob's dependencies (typer, pyyaml) are not installed",
           "submit": no_ray, "bench": no_ray}
for name in ("tests", "tutorial", "run", "submit", "bench"):
    ran = outcome(name)
    report["steps"][name] = ran or {"skipped": why_not[name]}
if outcome("tutorial") and outcome("tutorial")["exit"] == 0:
    report["steps"]["tutorial"]["figures"] = json.loads(outcome("tutorial")["tail"].strip().splitlines()[-1])
for name, folder in (("run", "runs"), ("submit", "runs-ray")):
    if outcome(name) and outcome(name)["exit"] == 0:
        report["steps"][name]["figures"] = summary(work / folder)
if outcome("bench") and outcome("bench")["exit"] == 0:
    bench = json.loads(sorted((work / "bench").glob("bench-cuda-*.json"))[-1].read_text())
    report["steps"]["bench"]["figures"] = {k: bench[k] for k in ("machine", "medians", "runs", "targets")}
run = report["steps"]["run"].get("figures")
report["goal_training_loop_under_5_s"] = None if not run else run["train_seconds"] < 5
Path(out).write_text(json.dumps(report, indent=2) + "\n")
failed = [n for n, s in report["steps"].items() if s.get("exit", 0) != 0]
print(f"wrote {out}; " + (f"failed: {', '.join(failed)}" if failed else "every step that could run passed"))
sys.exit(1 if failed else 0)
EOF
