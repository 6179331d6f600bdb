"""npvae against PyTorch on the same VAE: test loss and seconds per epoch.

The model is the classic one of PyTorch's examples (``examples/vae``):
784-400-20, ReLU, Bernoulli decoder on continuous pixels (BCE summed over
pixels plus the closed-form KL), Adam at 1e-3, batch 128, float32.  Both see
the same uint8 MNIST arrays, scaled per batch; both use 2 threads.  The two
alternate epoch by epoch, so machine load affects them alike, and the table
gives the time ratio epoch by epoch.

    python benchmarks/compare_pytorch.py --data-dir ../shared/data/mnist --epochs 10

PyTorch is a peer to measure against, not a dependency:
``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from npvae.data import Batches, load_dataset
from npvae.evaluate import evaluate_loss
from npvae.models import VAE
from npvae.optim import Adam


def make_torch_vae(torch):
    nn, F = torch.nn, torch.nn.functional

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            mu, log_var = self.fc21(h), self.fc22(h)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            logits = self.fc4(F.relu(self.fc3(z)))
            return logits, mu, log_var

    def loss_fn(logits, x, mu, log_var):
        # BCE from logits (the stable form of the example's sigmoid + BCE), summed; plus KL.
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        return bce + kl

    return TorchVAE(), loss_fn


def torch_epoch(torch, model, loss_fn, optimizer, x_train, batch_size, generator):
    model.train()
    order = torch.randperm(len(x_train), generator=generator)
    data = torch.from_numpy(x_train)
    for start in range(0, len(order), batch_size):
        x = data[order[start : start + batch_size]].float().div_(255)
        optimizer.zero_grad()
        logits, mu, log_var = model(x)
        loss = loss_fn(logits, x, mu, log_var)
        loss.backward()
        optimizer.step()


def torch_test_loss(torch, model, loss_fn, x_test) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        data = torch.from_numpy(x_test)
        for start in range(0, len(data), 1000):
            x = data[start : start + 1000].float().div_(255)
            logits, mu, log_var = model(x)
            total += loss_fn(logits, x, mu, log_var).item()
    return total / len(x_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    data = load_dataset("mnist", args.data_dir)
    x_test = (data.x_test / np.float32(255)).astype(np.float32)

    torch_model, loss_fn = make_torch_vae(torch)
    torch_optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)

    rng = np.random.default_rng(args.seed)
    vae = VAE(input_dim=784, hidden=[400], latent_dim=20, seed=args.seed)
    adam = Adam(vae.params, lr=1e-3)
    batches = Batches(data.x_train, 128, rng)

    print(f"VAE 784-400-20 on MNIST, continuous pixels, batch 128, Adam 1e-3, {args.epochs} epochs")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); numpy {np.__version__}")
    print()
    columns = ("epoch", "npvae s", "torch s", "ratio", "npvae test", "torch test")
    widths = (5, 8, 8, 6, 11, 11)
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, widths)))
    totals = [0.0, 0.0]
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        for x in batches:
            vae.loss(x, rng)
            adam.step(vae.grads)
        ours = time.perf_counter() - started
        started = time.perf_counter()
        torch_epoch(torch, torch_model, loss_fn, torch_optimizer, data.x_train, 128, generator)
        theirs = time.perf_counter() - started
        totals[0] += ours
        totals[1] += theirs
        our_test = evaluate_loss(vae, x_test, np.random.default_rng([args.seed, epoch]))["loss"]
        their_test = torch_test_loss(torch, torch_model, loss_fn, data.x_test)
        print(
            f"{epoch:>5} {ours:>8.2f} {theirs:>8.2f} {ours / theirs:>6.2f} "
            f"{our_test:>11.2f} {their_test:>11.2f}",
            flush=True,
        )
    print(
        f"{'all':>5} {totals[0]:>8.2f} {totals[1]:>8.2f} {totals[0] / totals[1]:>6.2f}"
        f"   final test loss difference: {our_test - their_test:+.2f} nats"
    )


if __name__ == "__main__":
    main()
