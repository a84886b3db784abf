"""The tutorial's pipeline wrapped in Ray Train by hand, as Ray's own fashion-MNIST example does it:
a second baseline for `make bench`, the one a user would write before reaching for rnnjob.

torchvision MNIST + ToTensor() through DataLoaders, `ray.train.torch.prepare_data_loader`,
`ray.train.torch.prepare_model`, the tutorial's model C and SGD, `ray.train.report` of the test
accuracy at each evaluation, one `TorchTrainer`. Only additions: a seed, the address of a running
cluster (default: an embedded Ray, as the example's `ray.init()` would start), timing, and one JSON
line at the end for the harness.

    python benchmarks/tutorial_ray_train.py --root data [--iters 3000] [--workers 1] [--gpu] [--address HOST:PORT]
"""

import argparse
import json
import os
import tempfile
import time

started = time.time()

import ray  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision.datasets as dsets  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402


class RNNModel(nn.Module):
    def __init__(self, input_dim, hidden_dim, layer_dim, output_dim):
        super().__init__()
        self.hidden_dim, self.layer_dim = hidden_dim, layer_dim
        self.rnn = nn.RNN(input_dim, hidden_dim, layer_dim, batch_first=True, nonlinearity="tanh")
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim, device=x.device).requires_grad_()
        out, _ = self.rnn(x, h0.detach())
        return self.fc(out[:, -1, :])


def train_func_per_worker(config: dict):
    torch.manual_seed(config["seed"])
    train_dataset = dsets.MNIST(root=config["root"], train=True, transform=transforms.ToTensor(), download=False)
    test_dataset = dsets.MNIST(root=config["root"], train=False, transform=transforms.ToTensor())
    batch_size = config["batch_size_per_worker"]
    train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_dataset, batch_size=batch_size, shuffle=False)
    train_loader = ray.train.torch.prepare_data_loader(train_loader)
    test_loader = ray.train.torch.prepare_data_loader(test_loader)
    model = ray.train.torch.prepare_model(RNNModel(28, 100, 2, 10))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    it, epoch, accuracy, loop_started, eval_seconds = 0, 0, 0.0, time.time(), 0.0
    while it < config["iters"]:
        if ray.train.get_context().get_world_size() > 1:
            train_loader.sampler.set_epoch(epoch)
        model.train()
        for images, labels in train_loader:
            if it == config["iters"]:
                break
            optimizer.zero_grad()
            loss = criterion(model(images.view(-1, 28, 28)), labels)
            loss.backward()
            optimizer.step()
            it += 1
            if it % 500 == 0 or it == config["iters"]:
                eval_started = time.time()
                model.eval()
                correct = total = 0
                with torch.no_grad():
                    for images, labels in test_loader:
                        predicted = model(images.view(-1, 28, 28)).argmax(dim=1)
                        total += labels.size(0)
                        correct += (predicted == labels).sum().item()
                accuracy = 100 * correct / total
                ray.train.report({"iteration": it, "loss": loss.item(), "accuracy": accuracy})
                eval_seconds += time.time() - eval_started
                model.train()
        epoch += 1
    if ray.train.get_context().get_world_rank() == 0:
        with open(config["out"], "w") as f:
            json.dump({"iterations": it, "final_accuracy": accuracy,
                       "train_seconds": round(time.time() - loop_started - eval_seconds, 3)}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data", help="folder holding MNIST/raw")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--address", default=None, help="a running cluster's GCS (default: an embedded Ray)")
    args = parser.parse_args()
    ray.init(address=args.address, include_dashboard=args.address is None or None)
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "figures.json")
        trainer = TorchTrainer(
            train_func_per_worker,
            train_loop_config={"root": os.path.abspath(args.root), "iters": args.iters, "seed": args.seed,
                               "batch_size_per_worker": 100 // args.workers, "out": out},
            scaling_config=ray.train.ScalingConfig(num_workers=args.workers, use_gpu=args.gpu),
            run_config=ray.train.RunConfig(storage_path=folder),
        )
        trainer.fit()
        with open(out) as f:
            figures = json.load(f)
    ray.shutdown()
    print(json.dumps({**figures, "wall_seconds": round(time.time() - started, 3)}))


if __name__ == "__main__":
    main()
