"""The tutorial's own pipeline, re-implemented faithfully, as the baseline for `make bench`.

Model C (2 layers of 100 tanh units, SGD at 0.1, batch 100), torchvision's MNIST decoded image by
image through ToTensor() and a DataLoader, the tutorial's forward with an explicit zero h0, and a
test evaluation in batches of 100 every 500 iterations. Only additions: a seed, device and
evaluation-schedule flags, timing (each evaluation's wall clock too), and one JSON line at the end
for the harness.

    python benchmarks/seed_baseline.py --root data [--iters 3000] [--device cpu|cuda]
"""

import argparse
import json
import time

started = time.time()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision.datasets as dsets  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402


class RNNModel(nn.Module):
    def __init__(self, input_dim, hidden_dim, layer_dim, output_dim):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.layer_dim = layer_dim
        self.rnn = nn.RNN(input_dim, hidden_dim, layer_dim, batch_first=True, nonlinearity="tanh")
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim, device=x.device).requires_grad_()
        out, hn = self.rnn(x, h0.detach())
        return self.fc(out[:, -1, :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data", help="folder holding MNIST/raw")
    parser.add_argument("--iters", type=int, default=3000, help="n_iters of the tutorial")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500, help="the tutorial's 500, unless a harness asks")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    # step 1: the dataset, decoded per sample by ToTensor()
    train_dataset = dsets.MNIST(root=args.root, train=True, transform=transforms.ToTensor(), download=False)
    test_dataset = dsets.MNIST(root=args.root, train=False, transform=transforms.ToTensor())

    # step 2: iterable; the tutorial runs int(n_iters / epoch length) epochs
    batch_size = 100
    num_epochs = max(1, int(args.iters / (len(train_dataset) / batch_size)))
    train_loader = torch.utils.data.DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(dataset=test_dataset, batch_size=batch_size, shuffle=False)

    # steps 3-6: model C, loss, optimizer
    seq_dim, input_dim = 28, 28
    model = RNNModel(input_dim, 100, 2, 10).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    # step 7: train
    loop_started = time.time()
    eval_seconds = 0.0
    it, accuracy, loss = 0, 0.0, None
    evaluations = []
    for _ in range(num_epochs):
        for images, labels in train_loader:
            if it == args.iters:
                break
            model.train()
            images = images.view(-1, seq_dim, input_dim).requires_grad_().to(device)
            labels = labels.to(device)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            it += 1
            if it % args.eval_every == 0 or it == args.iters:
                if device.type == "cuda":  # the steps queued on the GPU belong to the training time
                    torch.cuda.synchronize(device)
                eval_started = time.time()
                model.eval()
                correct = total = 0
                for images, labels in test_loader:
                    images = images.view(-1, seq_dim, input_dim).to(device)
                    outputs = model(images)
                    _, predicted = torch.max(outputs.data, 1)
                    total += labels.size(0)
                    correct += (predicted.cpu() == labels).sum()
                accuracy = 100 * correct.item() / total
                print(f"Iteration: {it}. Loss: {loss.item()}. Accuracy: {accuracy}", flush=True)
                eval_seconds += time.time() - eval_started
                evaluations.append({"iteration": it, "accuracy": accuracy, "t": time.time()})  # time to accuracy
    loop_seconds = time.time() - loop_started
    print(json.dumps({"iterations": it, "final_accuracy": accuracy, "final_loss": loss.item(),
                      "train_seconds": round(loop_seconds - eval_seconds, 3), "eval_seconds": round(eval_seconds, 3),
                      "wall_seconds": round(time.time() - started, 3), "threads": torch.get_num_threads(),
                      "evaluations": evaluations}))


if __name__ == "__main__":
    main()
