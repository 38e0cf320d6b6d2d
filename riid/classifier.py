"""A small MNIST CNN that judges generated digits: class logits and a 128-d feature for Fréchet distances.

Any image reaches it through ``prepare``: padded to a square (background −1, centred) and
resized to 32×32, never stretched, so a digit squashed into a wide canvas stays squashed and
fails. Training shifts, shrinks and blurs the digits a little so that small digits in a
padded canvas, and digits drawn at 16 px, are judged fairly.

Train: ``python -m riid.classifier --out checkpoints/classifier [--epochs 5] [--data-root data]``.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import register_model
from .validate import LIMITS, check_size

SIZE = 32  # classifier input side
DEFAULT_CLASSIFIER = Path(__file__).resolve().parent.parent / "checkpoints" / "classifier"


@dataclass
class ClassifierConfig:
    channels: tuple = (24, 48, 96)  # conv widths; each block halves the side (32 → 16 → 8 → 4)
    feature_dim: int = 128  # penultimate layer, used for Fréchet distances
    num_classes: int = 10
    dropout: float = 0.2

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)  # JSON gives a list back


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        blocks, width = [], 1
        for out in c.channels:
            blocks += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.convs = nn.Sequential(*blocks)
        side = SIZE // 2 ** len(c.channels)
        self.to_features = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, c.feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 1, 32, 32] in [-1, 1] (see ``prepare``) → penultimate features [B, feature_dim]."""
        if x.ndim != 4 or x.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"classifier input must be [batch, 1, {SIZE}, {SIZE}] (use prepare()), "
                             f"got {tuple(x.shape)}")
        return self.to_features(self.convs(x))  # [B, 1, 32, 32] → [B, C, 4, 4] → [B, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))  # [B, 10] logits


register_model("classifier", Classifier, ClassifierConfig)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, H, W] of any size in [-1, 1] → [N, 1, 32, 32]: pad to a square, then resize."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [batch, 1, height, width], got {shape}")
    h, w = check_size("image size", tuple(images.shape[-2:]), LIMITS.side)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    x = F.pad(images.float(), (left, side - w - left, top, side - h - top), value=-1.0)  # centred, background −1
    if side != SIZE:
        # antialias: a 128 px digit is averaged down, not sampled through its thin strokes
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


@torch.no_grad()
def classify(classifier: Classifier, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels [N] and features [N, F] of images of any size, in batches."""
    labels, feats = [], []
    for start in range(0, len(images), batch):
        f = classifier.features(prepare(images[start:start + batch]))
        feats.append(f)
        labels.append(classifier.head(f).argmax(1))
    return torch.cat(labels), torch.cat(feats)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation of [B, 1, 32, 32] digits, per image: a scale in [0.6, 1.1] (half of them near 1),
    a shift of up to ±3 px, and for a quarter a round trip through 14–24 px (the blur of small outputs).

    The scale goes below 0.7 because a 32×48 canvas padded to 48×48 shows the digit at 2/3 size.
    """
    b = len(images)
    u = torch.rand(b, generator=generator)
    scale = torch.where(torch.rand(b, generator=generator) < 0.5, 0.9 + 0.2 * u, 0.6 + 0.5 * u)
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * 3 / (SIZE / 2)  # ±3 px in [-1, 1] units
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale  # the sampling grid shrinks as the digit grows
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # sample (x + 1) with zero padding so that the background stays −1
    x = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    blur = torch.rand(b, generator=generator) < 0.25
    if blur.any():
        low = int(torch.randint(14, 25, (), generator=generator))
        small = F.interpolate(x[blur], size=(low, low), mode="bilinear", antialias=True, align_corners=False)
        x[blur] = F.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x.clamp(-1, 1)


@torch.no_grad()
def accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    classifier.eval()
    return float((classify(classifier, images)[0] == labels).float().mean())


def train_classifier(images, labels, test_images, test_labels, epochs: int = 5, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, config: ClassifierConfig | None = None, log=print):
    """Adam with a one-cycle schedule; returns the model (in eval mode) and its test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(config or ClassifierConfig())
    steps = epochs * math.ceil(len(images) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start, step = time.time(), 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(augment(images[idx], generator)), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                log(f"epoch {epoch + 1} step {step}/{steps} loss {loss.item():.4f} {time.time() - start:.0f}s")
        acc = accuracy(model, test_images, test_labels)
        log(f"epoch {epoch + 1}: test accuracy {acc:.4%} ({time.time() - start:.0f}s)")
    return model.eval(), acc


def main(argv=None) -> None:
    from .checkpoint import save_model
    from .data import load_mnist

    parser = argparse.ArgumentParser(prog="python -m riid.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER, help="output folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--data-root", default="data", help="MNIST root, or 'fixture' (tests only)")
    parser.add_argument("--limit", type=int, help="use only the first N training digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, labels = load_mnist("train", root=args.data_root, limit=args.limit)
    test_images, test_labels = load_mnist("test", root=args.data_root)
    start = time.time()
    model, acc = train_classifier(images, labels, test_images, test_labels, args.epochs, args.batch_size,
                                  args.lr, args.seed)
    save_model(model, args.out)
    print(f"test accuracy {acc:.4%} on {len(test_labels)} digits after {args.epochs} epochs "
          f"({time.time() - start:.0f}s); saved to {args.out}")


if __name__ == "__main__":
    # `python -m` runs this file as __main__ after `import riid` has already imported it as
    # riid.classifier; use that module's classes, the ones riid.checkpoint knows how to save.
    from riid.classifier import main as package_main

    package_main()
