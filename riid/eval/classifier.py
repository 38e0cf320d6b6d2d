"""Two small MNIST CNNs judge generated digits: one reads the class, one sees how real it looks.

- ``classifier``: trained with half of its digits put through a random lower resolution, so a
  soft 16 px digit still reads as its class: its predictions give the class accuracy.
- ``realism``: the same network trained on clean digits only (no blur or resolution changes;
  whole-pixel shifts of up to 2 px), so blur, grey edges and odd strokes move its features: they
  give the Fréchet distance and the within-class variety.

Every image reaches both through ``prepare``: cropped to its ink, padded to a centred square with a
margin, resized to 32×32. A digit on a tall or wide canvas is judged as on a square one, while a
stretched digit stays stretched and two digits side by side stay two.

Train: ``python scripts/train_judges.py --kind classifier|realism --out checkpoints/<kind>``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_model, register_model
from ..pipeline import default_checkpoint
from ..validate import LIMITS, check_size

SIZE = 32  # network input side
INK = -0.5  # a pixel brighter than a quarter of full ink counts towards the digit's bounding box
FILL = 0.75  # the ink's longer side fills this share of the square: 24 of 32 px, as an MNIST digit


@dataclass
class ClassifierConfig:
    channels: tuple = (24, 48, 96)  # conv widths; each block halves the side (32 → 16 → 8 → 4)
    feature_dim: int = 128  # penultimate layer: the features of Fréchet distances and variety
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
            blocks += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.convs = nn.Sequential(*blocks)
        side = SIZE // 2 ** len(c.channels)
        self.to_features = nn.Sequential(nn.Flatten(),
                                         nn.Linear(width * side * side, c.feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 1, 32, 32] in [-1, 1] (see ``prepare``) → penultimate features [B, feature_dim]."""
        if x.ndim != 4 or x.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"classifier input must be [batch, 1, {SIZE}, {SIZE}] (use "
                             f"prepare()), got {tuple(x.shape)}")
        return self.to_features(self.convs(x))  # [B, 1, 32, 32] → [B, C, 4, 4] → [B, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))  # [B, 10] logits


register_model("classifier", Classifier, ClassifierConfig)


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """[N, 4] (top, left, height, width) of pixels above INK in [N, 1, H, W] images, all if none."""
    ink = images[:, 0] > INK
    spans = []
    for axis in (ink.any(2), ink.any(1)):  # [N, H] rows with ink, [N, W] columns with ink
        first = axis.int().argmax(1)  # the first True (0 where there is none)
        last = axis.shape[1] - 1 - axis.flip(1).int().argmax(1)
        spans += [first, torch.where(axis.any(1), last - first + 1, axis.shape[1])]
    return torch.stack([spans[0], spans[2], spans[1], spans[3]], 1)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, H, W] of any size in [-1, 1] → [N, 1, 32, 32]: the ink's bounding box,
    centred in a square with a margin (background −1 where it leaves the canvas), resized."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [batch, 1, height, width], got {shape}")
    height, width = check_size("image size", tuple(images.shape[-2:]), LIMITS.side)
    images, out = images.float(), []
    for image, (top, left, h, w) in zip(images, ink_boxes(images).tolist()):
        side = max(1, round(max(h, w) / FILL))
        top, left = (2 * top + h - side) // 2, (2 * left + w - side) // 2
        crop = image[:, max(top, 0):top + side, max(left, 0):left + side]
        crop = F.pad(crop, (max(-left, 0), max(left + side - width, 0), max(-top, 0),
                            max(top + side - height, 0)), value=-1.0)
        out.append(F.interpolate(crop[None], size=(SIZE, SIZE), mode="bilinear", antialias=True))
    return torch.cat(out).clamp(-1, 1) if out else images.new_zeros(0, 1, SIZE, SIZE)


@dataclass(frozen=True)
class Judges:
    classifier: Classifier  # reads the class; trained to forgive the softness of small outputs
    realism: Classifier  # trained on clean digits: its features see blur

    @classmethod
    def load(cls, classifier=None, realism=None) -> "Judges":
        """The given folders, else the shipped ones beside the pipeline's weights."""
        folder = default_checkpoint()
        return cls(load_model(classifier or folder / "classifier", "classifier"),
                   load_model(realism or folder / "realism", "classifier"))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted labels [N] (classifier) and realism features [N, F] of images of any size."""
        labels, feats = [], []
        for start in range(0, len(images), batch):
            x = prepare(images[start:start + batch])
            labels.append(self.classifier.eval()(x).argmax(1))
            feats.append(self.realism.eval().features(x))
        return torch.cat(labels), torch.cat(feats)
