"""Speed and memory benchmark of riid: ``riid bench`` plus a training step of each model.

    python benchmarks/bench.py [--checkpoint DIR] [--quick] [--out results/bench] [--threads N]

Sampling rows: see riid/eval/bench.py. Training rows (this script only, as they need the training
code): a step of each model at the checkpoint's configs on fresh weights, its images per second,
and its matmul and attention FLOPs as a share of the measured matmul rate.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from riid.data import load_mnist
from riid.diffuser import R2ID, LabelConditioner
from riid.eval.bench import DEFAULT_OUT, Row, run_bench
from riid.pipeline import load_pipeline
from riid.tasks import AutoencoderTask, DiffuserTask, DiffusionModel


def count_flops(fn) -> int:
    """FLOPs of the matmuls and attention ``fn()`` runs (torch's counter misses the CPU kernel)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu:
               lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
               aten._scaled_dot_product_flash_attention_for_cpu_backward:
               lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def time_steps(task, model, batches) -> tuple[float, float, int]:
    """Mean seconds of a training step (loss, backward, clipping, AdamW) after a warm-up, images per
    second, and the FLOPs of the first batch's forward and backward."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        task.loss(model, batch)[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = (time.perf_counter() - start) / len(batches)
    flops = count_flops(lambda: task.loss(model, batches[0])[0].backward())
    model.zero_grad(set_to_none=True)
    return seconds, statistics.mean(b["size"] for b in batches) / seconds, flops


def training_rows(folder: Path, quick: bool, gflops: float) -> list[Row]:
    """A step of each model as riid.train runs it, on batches its task draws (canvas and latent
    sizes vary from batch to batch)."""
    images, labels = load_mnist("test", root="fixture")
    pipe = load_pipeline(folder)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ae = type(pipe.autoencoder)(pipe.autoencoder.config)
    model = DiffusionModel(R2ID(pipe.diffuser.config), LabelConditioner(pipe.conditioner.config))
    ae_batch, diff_batch = (8, 8) if quick else (64, 128)  # the CLI's defaults
    cases = [("autoencoder", AutoencoderTask(ae, images, batch_size=ae_batch), ae, ae_batch),
             ("diffuser", DiffuserTask(model, pipe.autoencoder, images, labels,
                                       folder / "autoencoder", batch_size=diff_batch),
              model, diff_batch)]
    rows = []
    for name, task, net, batch_size in cases:
        print(f"bench: {name} training step …", file=sys.stderr, flush=True)
        batches = [task.batch(generator, "cpu") for _ in range(1 if quick else 8)]
        seconds, rate, flops = time_steps(task, net, batches)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        setting = f"{params:.2f} M params, --batch-size {batch_size}, AdamW; mean of {len(batches)}"
        rows.append(Row(f"{name} training step", setting, seconds, rate, "img/s",
                        note=f"{flops / 1e9:.1f} GFLOP forward+backward (matmuls and attention) = "
                             f"{flops / seconds / 1e9 / gflops:.0%} of the matmul rate"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="pipeline folder (default: the weights)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (a smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    run_bench(args.checkpoint, quick=args.quick, out=args.out, threads=args.threads,
              extra=training_rows)


if __name__ == "__main__":
    main()
