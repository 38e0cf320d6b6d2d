"""Which change makes the autoencoder's reconstructions sharp? One decoder-only fine-tune per variant.

    python benchmarks/sharpness_ablation.py --steps 400 --out runs/sharpness [--variants a,b]

Each variant starts from the shipped autoencoder, freezes its encoder (so the shipped diffuser's latents
stay valid) and trains the decoder for the same steps with one change at a time; then
``riid eval --checkpoint`` on a pipeline folder with that decoder, or ``autoencoder_report`` below, scores it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from riid.checkpoint import load_model
from riid.data import load_mnist
from riid.tasks import AutoencoderTask
from riid.train import TrainConfig, train

# name: (targets read at the jittered point, loss, latent noise in training)
VARIANTS = {
    "nearest-mse": (False, "mse", 0.05),  # the recipe of the previous release
    "interp-mse": (True, "mse", 0.05),
    "interp-l1": (True, "l1", 0.05),
    "interp-l1-noise0.01": (True, "l1", 0.01),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints"))
    parser.add_argument("--out", type=Path, default=Path("runs/sharpness"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    images, _ = load_mnist("train", root=args.data_root)
    for name in args.variants.split(","):
        sharp, loss, noise = VARIANTS[name]
        model = load_model(args.checkpoint / "autoencoder", "riae")
        model.config = dataclasses.replace(model.config, latent_noise=noise)
        task = AutoencoderTask(model, images, 64, decoder_only=True, sharp_targets=sharp, loss=loss)
        config = TrainConfig(steps=args.steps, batch_size=64, lr=args.lr, warmup=min(50, args.steps // 4),
                             preview_every=args.steps, threads=args.threads, save_every_s=600)
        start = time.time()
        summary = train(task, config, args.out / name)
        print(json.dumps({"variant": name, **summary, "minutes": (time.time() - start) / 60}), flush=True)


if __name__ == "__main__":
    main()
