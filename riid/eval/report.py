"""The resolution-invariance report behind ``riid eval``.

Per output size, generated digits against real test digits at that size: class accuracy (the
classifier), realism (the clean network's Fréchet distance beside the real-versus-real floor),
within-class variety, sharpness, and the sampling time. For the autoencoder: reconstructions of
real digits at several sizes, and 16 → 32 px resampling against bicubic, scored the same way."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import cost
from ..images import resize, save_grid
from ..pipeline import (LATENT_SHORT_SIDE, SAMPLING, Settings, default_checkpoint,
                        default_latent_size, load_pipeline)
from ..validate import LIMITS, check_int, check_size
from .classifier import Judges
from .metrics import balanced_split, frechet_distance, psnr, real_at, sharpness, variety

# square sides, then 4:3, 3:4, 16:9, 9:16, 1:2, 2:1, 1:3, 3:1 (width:height) at a 32 px shorter side
DEFAULT_SIZES = "16,24,28,32,48,64,128,256,32x43,43x32,32x57,57x32,64x32,32x64,96x32,32x96"
FAST_SIZES = "16,32,96x32"
DEFAULT_N, FAST_N = 100, 5
RECON_SIZES = (16, 32, 64, 128)
GRID_PER_DIGIT = 8  # samples per digit (one row per digit) in each grid PNG


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'16,24x40' → [(16, 16), (24, 40)]: a side for a square, HxW (height first) otherwise."""
    sizes = []
    for part in filter(None, (p.strip().lower() for p in str(text).split(","))):
        try:
            size = tuple(int(v) for v in part.split("x")) if "x" in part else int(part)
        except ValueError:
            raise ValueError(f"sizes must be a comma-separated list like 16,32,24x40; "
                             f"got {part!r}") from None
        sizes.append(check_size(f"size {part}", size, LIMITS.side))
    if not sizes:
        raise ValueError("sizes must name at least one size, like 16,32,24x40")
    return sizes


def at_size(pipe, settings: Settings, height: int, width: int) -> Settings:
    """``settings`` at height×width with the pipeline's default latent for that size."""
    return pipe.settings(height, width, **{k: getattr(settings, k) for k in SAMPLING})


def diffuse(pipe, digits: list[int], s: Settings) -> torch.Tensor:
    """The latents ``pipe.generate(digits, s)`` decodes: image i from its own seed, whatever the
    batching."""
    step = pipe.batch_sizes(len(digits), s)[0]
    return torch.cat([pipe.sample_latents(digits[i:i + step], s, first_index=i)
                      for i in range(0, len(digits), step)])


@torch.no_grad()
def round_trip(pipe, images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Encode images to their size's default latent; decode at height×width with Pipeline.decode."""
    s = pipe.settings(height, width, latent_size=default_latent_size(*images.shape[-2:]))
    step = cost.images_per_batch(pipe, s, input_size=tuple(images.shape[-2:]))
    latent = (s.latent_height, s.latent_width)
    encode = pipe.autoencoder.encode
    return torch.cat([pipe.decode(encode(images[i:i + step], latent), height, width)
                      for i in range(0, len(images), step)])


class Reference:
    """Real test digits at one size: set A is what every image set is compared with, set B (other
    digits of the same classes) gives the real-versus-real floor."""

    def __init__(self, judges: Judges, a, labels_a, b, labels_b, height: int, width: int):
        images = real_at(a, height, width)
        pred, self.features = judges(images)
        self.accuracy = float((pred == labels_a).float().mean())
        self.variety = variety(self.features, labels_a)
        self.sharpness = sharpness(images)
        self.floor = frechet_distance(judges(real_at(b, height, width))[1], self.features)

    def score(self, judges: Judges, images: torch.Tensor, labels: torch.Tensor) -> dict:
        pred, feats = judges(images)
        fd, sharp = frechet_distance(feats, self.features), sharpness(images)
        correct = pred == labels
        per_class = [float(correct[labels == d].float().mean()) for d in range(10)]
        return {"accuracy": float(correct.float().mean()), "per_class_accuracy": per_class,
                "fd": fd, "fd_floor": self.floor, "fd_ratio": fd / max(self.floor, 1e-12),
                "variety_ratio": variety(feats, labels) / max(self.variety, 1e-12),
                "white": sharp["white"], "white_real": self.sharpness["white"],
                "gradient": sharp["gradient"], "gradient_real": self.sharpness["gradient"]}


def evaluate(pipe, judges: Judges, real: tuple[torch.Tensor, torch.Tensor],
             settings: Settings | None = None, *, sizes=DEFAULT_SIZES, n_per_class: int = DEFAULT_N,
             recon_sizes=RECON_SIZES, out_dir="results/eval", notes=(), progress=True) -> dict:
    """Write report.md, report.json and grid_<H>x<W>.png into ``out_dir``; return the report.

    ``settings`` gives everything but the size (each size gets the pipeline's default latent;
    None: the pipeline's defaults);
    ``real`` is (images [N, 1, 32, 32], labels [N]) of test digits: two disjoint class-balanced
    sets of up to ``n_per_class`` each give the reference and the floor, and the second set's
    reconstructions at each of ``recon_sizes`` score the autoencoder."""
    from tqdm.auto import tqdm

    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    sizes = [check_size("size", size, LIMITS.side) for size in sizes]
    n = check_int("n per class", n_per_class, 1, 100_000)
    settings = pipe.defaults if settings is None else settings
    at_size(pipe, settings, 32, 32)  # fail before any work
    images, labels = real
    counts = torch.bincount(labels, minlength=10)
    n_real = min(n, int(counts.min()) // 2)
    if len(images) != len(labels) or n_real < 2:
        raise ValueError(f"real digits: need one label per image and 4 of each class, got "
                         f"{len(images)} images, {counts.tolist()} per class")
    notes = list(notes) + ([f"the rarest class has {int(counts.min())} real digits: the real sets "
                            f"hold {n_real} per class, not {n}"] if n_real < n else [])
    if n_real < DEFAULT_N:  # the floor falls about as 1/N: small sets blur the ratios
        notes.append(f"{n_real} real digits per class: Fréchet ratios are rough below {DEFAULT_N}")
    idx_a, idx_b = balanced_split(labels, n_real, settings.seed)
    a, la, b, lb = images[idx_a], labels[idx_a], images[idx_b], labels[idx_b]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = {}

    def ref(h, w):
        if (h, w) not in refs:
            refs[h, w] = Reference(judges, a, la, b, lb, h, w)
        return refs[h, w]

    bar = tqdm(total=10 * n * len(sizes), desc="eval", unit="img", disable=not progress)
    rows, digits = [], torch.arange(10).repeat_interleave(n)
    latents = {}  # sizes on one latent shape share its digits: each is diffused once, decoded at each
    for h, w in sizes:
        bar.set_postfix_str(f"{h}x{w}")
        s = at_size(pipe, settings, h, w)
        shape = (s.latent_height, s.latent_width)
        if shape not in latents:
            start = time.perf_counter()
            latents[shape] = diffuse(pipe, digits.tolist(), s), time.perf_counter() - start
        start = time.perf_counter()
        step = pipe.batch_sizes(len(digits), s)[0]
        gen = torch.cat([pipe.decode(latents[shape][0][i:i + step], h, w)
                         for i in range(0, len(digits), step)])
        bar.update(len(digits))
        # what generating this size alone takes
        seconds = (latents[shape][1] + time.perf_counter() - start) / len(digits)
        grid = f"grid_{h}x{w}.png"
        save_grid(gen.view(10, n, 1, h, w)[:, :GRID_PER_DIGIT].flatten(0, 1), out_dir / grid,
                  min(n, GRID_PER_DIGIT))
        rows.append({"height": h, "width": w, "latent": list(shape),
                     **ref(h, w).score(judges, gen, digits), "real_accuracy": ref(h, w).accuracy,
                     "seconds_per_image": seconds, "grid": grid})
    bar.set_postfix_str("autoencoder")
    recon = {}
    for side in recon_sizes:
        x = real_at(b, side, side)
        y = round_trip(pipe, x, side, side)
        recon[str(side)] = {"latent": list(default_latent_size(side, side)),
                            "mse": float((y - x).pow(2).mean()), "psnr": psnr(y, x),
                            **ref(side, side).score(judges, y, lb)}
    small, target = real_at(b, 16, 16), real_at(b, 32, 32)
    resample = {"latent": list(default_latent_size(16, 16))}
    for name, y in (("autoencoder", round_trip(pipe, small, 32, 32)),
                    ("bicubic", resize(small, 32, 32))):
        resample[name] = {"psnr": psnr(y, target), **ref(32, 32).score(judges, y, lb)}
    bar.close()

    report = {"settings": {**{k: getattr(settings, k) for k in SAMPLING}, "n_per_class": n,
                           "real_per_class": n_real, "threads": torch.get_num_threads()},
              "notes": notes, "sizes": rows,
              "autoencoder": {"n": len(b), "reconstruction": recon, "resample_16_to_32": resample}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    return report


def _ratio(value: float, real: float, fmt: str) -> str:
    return f"{value:{fmt}} ({value / real:.2f}×)" if real > 0 else f"{value:{fmt}}"


def _quality(r: dict) -> str:
    """The realism, variety and sharpness cells of a row."""
    return (f"{r['fd']:.2f} ({r['fd_ratio']:.1f}×) | {r['fd_floor']:.2f} | "
            f"{r['variety_ratio']:.2f}× | {_ratio(r['white'], r['white_real'], '.1%')} | "
            f"{_ratio(r['gradient'], r['gradient_real'], '.3f')}")


QUALITY = ("realism FD (× floor) | FD floor (real vs real) | variety (× real) | "
           "near-white px (× real) | gradient (× real)")


def _header(columns: str) -> list[str]:
    return [f"| {columns} |", "| --- " * (columns.count("|") + 1) + "|"]


def markdown(report: dict) -> str:
    s, ae = report["settings"], report["autoencoder"]
    lines = ["# riid eval", "",
             f"{s['n_per_class']} digits per class and size; sampler {s['sampler']}, {s['steps']} "
             f"steps spaced in {s['spacing']}, CFG {s['cfg']:g} from log-SNR {s['cfg_from']:g} on "
             f"a {LATENT_SHORT_SIDE}×{LATENT_SHORT_SIDE} latent (later on larger ones), "
             f"eta {s['eta']:g}, clouds {s['clouds']}, seed {s['seed']}, {s['threads']} CPU "
             f"thread(s). Real digits: {s['real_per_class']} per class, resized unstretched to "
             "fill the shorter side. The judges see every image cropped to its ink and padded to "
             "a square. Realism: the Fréchet distance of a network trained on clean digits; "
             "variety: the mean within-class feature distance; near-white: pixels above 0.9 on "
             "[0, 1]; gradient: the mean magnitude per pixel.", ""]
    lines += [f"Note: {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    lines += _header(f"size (H×W) | latent | accuracy | real digits | worst digit | {QUALITY} | "
                     "s / image")
    for r in report["sizes"]:
        worst = min(range(10), key=lambda d: r["per_class_accuracy"][d])
        lines.append(f"| {r['height']}×{r['width']} | {r['latent'][0]}×{r['latent'][1]} | "
                     f"{r['accuracy']:.1%} | {r['real_accuracy']:.1%} | {worst} "
                     f"({r['per_class_accuracy'][worst]:.0%}) | {_quality(r)} | "
                     f"{r['seconds_per_image']:.3f} |")
    lines += ["", f"## Autoencoder: reconstructions of {ae['n']} test digits", "",
              *_header(f"size | latent | MSE ([-1, 1]) | PSNR (dB) | accuracy | {QUALITY}")]
    for side, r in ae["reconstruction"].items():
        lines.append(f"| {side}×{side} | {r['latent'][0]}×{r['latent'][1]} | {r['mse']:.4f} | "
                     f"{r['psnr']:.2f} | {r['accuracy']:.1%} | {_quality(r)} |")
    rs = ae["resample_16_to_32"]
    lines += ["", f"16 → 32 px: a digit at 16 px encoded to a {rs['latent'][0]}×{rs['latent'][1]}"
              " latent and decoded at 32 px, against bicubic upsampling and the true 32 px digit.",
              "", *_header(f"16 → 32 px | PSNR (dB) | accuracy | {QUALITY}")]
    for name in ("autoencoder", "bicubic"):
        lines.append(f"| {name} | {rs[name]['psnr']:.2f} | {rs[name]['accuracy']:.1%} | "
                     f"{_quality(rs[name])} |")
    lines += ["", "## Samples (one row per digit)", ""]
    lines += [f"{r['height']}×{r['width']}: ![{r['height']}x{r['width']}]({r['grid']})"
              for r in report["sizes"]]
    return "\n".join(lines) + "\n"


def add_eval_arguments(parser) -> None:
    """The report's own flags; the CLI adds the sampling settings' flags."""
    parser.description = ("Resolution-invariance report: per size, class accuracy, realism "
                          "(Fréchet distance ÷ the real floor), variety, sharpness and time; "
                          "autoencoder reconstructions scored the same way. Written to --out.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="pipeline folder (default: the shipped weights)")
    parser.add_argument("--classifier", type=Path,
                        help="class judge folder (default: <shipped weights>/classifier)")
    parser.add_argument("--realism", type=Path,
                        help="realism judge folder (default: <shipped weights>/realism)")
    parser.add_argument("--sizes", help=f"comma-separated sizes, a side or HxW, height first "
                                        f"(default {DEFAULT_SIZES}; --fast: {FAST_SIZES})")
    parser.add_argument("--n", type=int, help=f"digits per class and size (default {DEFAULT_N}; "
                                              f"--fast: {FAST_N})")
    parser.add_argument("--out", type=Path, default=Path("results/eval"),
                        help="default results/eval")
    parser.add_argument("--data-root", default="data",
                        help="MNIST root (default data; else the shipped 1,000-digit fixture)")
    parser.add_argument("--fast", action="store_true", help=f"--n {FAST_N} --sizes {FAST_SIZES}")


def load_test_digits(root) -> tuple[torch.Tensor, torch.Tensor, str]:
    from ..data import load_mnist

    if str(root) != "fixture":
        try:
            images, labels = load_mnist("test", root=root, download=False)
            return images, labels, f"real digits: the MNIST test set under {root} ({len(images):,})"
        except FileNotFoundError:
            pass
    images, labels = load_mnist("test", root="fixture")
    return images, labels, f"real digits: the shipped {len(images):,}-digit test fixture"


def run_eval_cli(args, sampling: dict) -> None:
    """``riid eval``: ``args`` from add_eval_arguments, ``sampling`` the Settings fields to use."""
    sizes = parse_sizes(args.sizes or (FAST_SIZES if args.fast else DEFAULT_SIZES))
    pipe = load_pipeline(args.checkpoint)
    settings = pipe.settings(**sampling)
    judges = Judges.load(args.classifier, args.realism)
    images, labels, source = load_test_digits(args.data_root)
    notes = [f"checkpoint {args.checkpoint or default_checkpoint()}", source]
    print("\n".join(f"note: {note}" for note in notes))
    n = args.n if args.n is not None else (FAST_N if args.fast else DEFAULT_N)
    evaluate(pipe, judges, (images, labels), settings, sizes=sizes, n_per_class=n,
             out_dir=args.out, notes=notes)
    print((Path(args.out) / "report.md").read_text().split("\n## Samples")[0])
    print(f"wrote report.md, report.json and {len(sizes)} grids to {args.out}")
