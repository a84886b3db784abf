"""The least any Ray Train job pays: a plain driver that joins a running cluster and fits a TorchTrainer
of one worker whose train function imports torch, reports once and returns (`make bench` variant h).

Nothing of rnnjob runs here; the worker asks for the CPUs that rnnjob's own single-worker job takes on
the same cluster (all of them), so that both wait for the same placement. Prints one JSON line: the
seconds from this process's start to the end of fit().

    python benchmarks/ray_train_floor.py --address HOST:PORT
"""

import argparse
import json
import os
import tempfile
import time

START = time.time()  # before the imports: a job's cost includes them

import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402


def train_fn(config):
    import torch

    ray.train.report({"torch": torch.__version__})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the running cluster's GCS address, HOST:PORT")
    args = parser.parse_args()
    ray.init(address=args.address, configure_logging=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    with tempfile.TemporaryDirectory(prefix="ray-floor-") as storage:
        result = TorchTrainer(
            train_fn,
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
            run_config=ray.train.RunConfig(name="floor", storage_path=storage)).fit()
        ended = time.time()
    ray.shutdown()
    if result.error:
        raise SystemExit(f"the floor job failed: {result.error}")
    print(json.dumps({"fit_seconds": ended - START, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
