"""Train the judges of ``riid eval`` (riid/eval/classifier.py): the class judge with a resolution
round trip, the realism judge on clean digits. The shipped weights came from

    OMP_NUM_THREADS=1 python scripts/train_judges.py --kind classifier --out checkpoints/classifier
    OMP_NUM_THREADS=1 python scripts/train_judges.py --kind realism --out checkpoints/realism
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from riid.checkpoint import save_model
from riid.data import load_mnist
from riid.eval.classifier import SIZE, Classifier, ClassifierConfig, Judges, prepare

SHIFT = 2  # training shifts, in whole pixels (no resampling)
LOW_SIDES = (12, 32)  # the classifier's resolution round trip: through a random side in this range


def augment(images: torch.Tensor, generator: torch.Generator, blur: bool) -> torch.Tensor:
    """A training batch [B, 1, 32, 32] as ``prepare`` gives it, shifted by up to SHIFT whole pixels.

    With ``blur`` half of the digits first go through a random side in LOW_SIDES and back, the
    softness of a small output that ``prepare`` enlarges.
    """
    x = images.clone()
    if blur:
        for i in torch.nonzero(torch.rand(len(x), generator=generator) < 0.5).flatten().tolist():
            low = int(torch.randint(LOW_SIDES[0], LOW_SIDES[1] + 1, (), generator=generator))
            small = F.interpolate(x[i:i + 1], size=(low, low), mode="bilinear", antialias=True)
            x[i:i + 1] = F.interpolate(small, size=(SIZE, SIZE), mode="bilinear")
    x = F.pad(prepare(x), (SHIFT,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, len(x)), generator=generator).tolist()
    return torch.stack([img[:, a:a + SIZE, b:b + SIZE] for img, a, b in zip(x, dy, dx)])


def accuracy(net: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((Judges(net, net)(images)[0] == labels).float().mean())  # one net, both roles


def train_classifier(images, labels, test_images, test_labels, blur: bool, epochs: int = 2,
                     batch_size: int = 128, lr: float = 3e-3, seed: int = 0, log=print):
    """AdamW with a one-cycle schedule; returns the model (in eval mode) and its test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(ClassifierConfig())
    steps = epochs * math.ceil(len(images) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start, acc = time.time(), 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), batch_size):
            idx = order[i:i + batch_size]
            logits = model(augment(images[idx], generator, blur))
            loss = F.cross_entropy(logits, labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if sched.last_epoch % 100 == 0:
                log(f"step {sched.last_epoch}/{steps} loss {loss.item():.4f} "
                    f"{time.time() - start:.0f}s")
        acc = accuracy(model, test_images, test_labels)
        log(f"epoch {epoch + 1}: test accuracy {acc:.2%} ({time.time() - start:.0f}s)")
    return model.eval(), acc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("classifier", "realism"), required=True,
                        help="classifier: with the resolution round trip; realism: clean digits")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--epochs", type=int, help="default: 5 for the classifier, 2 for realism")
    parser.add_argument("--data-root", default="data", help="MNIST root, or 'fixture' (tests only)")
    parser.add_argument("--limit", type=int, help="use only the first N training digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, labels = load_mnist("train", root=args.data_root, limit=args.limit)
    test_images, test_labels = load_mnist("test", root=args.data_root)
    start = time.process_time()
    blur = args.kind == "classifier"
    epochs = args.epochs or (5 if blur else 2)  # as the shipped weights (checkpoints/<kind>)
    model, acc = train_classifier(images, labels, test_images, test_labels, blur=blur,
                                  epochs=epochs, seed=args.seed)
    save_model(model, args.out)
    print(f"test accuracy {acc:.2%} on {len(test_labels):,} digits after {epochs} epochs "
          f"({(time.process_time() - start) / 60:.1f} CPU min); saved to {args.out}")


if __name__ == "__main__":
    main()
