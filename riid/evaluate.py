"""The resolution-invariance report behind ``riid eval``.

Per output size: how often an independent classifier reads the requested digit, the Fréchet
distance of its features to real test digits at that size (beside the real-versus-real floor),
and the sampling time per image. For the autoencoder: reconstruction error at several sizes, and
16 → 32 px resampling against bicubic upsampling. Every image, generated or real, reaches the
classifier through ``classifier.prepare`` (pad to square, then resize), so a digit stretched to
fill a wide canvas is judged as stretched.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import pipeline as P
from .classifier import DEFAULT_CLASSIFIER, Classifier, classify
from .data import canvas
from .images import resize, save_grid
from .validate import LIMITS, check_int, check_size

DEFAULT_SIZES = "16,24,32,48,64,128,24x40,40x24,32x48,48x32"
FAST_SIZES = "16,32,24x40"
DEFAULT_N = 100
FAST_N = 5
RECON_SIZES = (16, 32, 64)
GRID_PER_DIGIT = 8  # samples per digit (one row per digit) in each grid PNG
DECODE_PIXELS = 1 << 16  # output pixels per decode call: 4 images at 128 px, 64 at 32 px
LATENT_TOKENS = 64  # latent tokens per image of the --batch budget: big latents come fewer per batch
PSNR_CAP = 100.0  # dB, reported for identical images instead of infinity (JSON has no inf)


# ---------------------------------------------------------------- metrics

def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'16,24x40' → [(16, 16), (24, 40)]: a side for a square, HxW otherwise."""
    sizes = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            h, w = (int(v) for v in part.split("x")) if "x" in part else (int(part), int(part))
        except ValueError:
            raise ValueError(f"sizes must be a comma-separated list like 16,32,24x40; got {part!r}") from None
        sizes.append(check_size(f"size {part}", (h, w), LIMITS.side))
    if not sizes:
        raise ValueError("sizes must name at least one size, like 16,32,24x40")
    return sizes


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB of [N, C, H, W] images (range 2 for [-1, 1]); identical images give PSNR_CAP."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse.clamp(min=1e-30))).clamp(max=PSNR_CAP)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()  # [size, size]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11×11 gaussian window, σ 1.5, K1 0.01, K2 0.03) of [N, C, H, W].

    Images are compared over the positions where the window fits; a smaller image shrinks the window.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.float(), b.float()
    size = min(window, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2  # odd
    channels = a.shape[1]
    kernel = _gaussian_window(size, sigma * size / window).to(a.device)[None, None].repeat(channels, 1, 1, 1)
    blur = lambda x: F.conv2d(x, kernel, groups=channels)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def frechet_distance(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (at least 2 rows each).

    ``eps`` on the covariance diagonals keeps the matrix square root stable when N is below D.
    """
    from scipy import linalg

    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in (x, y))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"frechet_distance needs two [N >= 2, D] feature sets, got {x.shape} and {y.shape}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    eye = np.eye(x.shape[1])
    cov_x, cov_y = np.cov(x, rowvar=False) + eps * eye, np.cov(y, rowvar=False) + eps * eye
    root = linalg.sqrtm(cov_x @ cov_y)
    if not np.isfinite(root).all():  # a near-singular product: retry further from singular
        root = linalg.sqrtm((cov_x + 1e-3 * eye) @ (cov_y + 1e-3 * eye))
    root = root.real  # sqrtm of a product of SPD matrices has real eigenvalues; drop round-off
    fd = ((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(root)
    return float(max(fd, 0.0))


# ---------------------------------------------------------------- real digits at any size

def reference_canvas(height: int, width: int) -> tuple[int, int]:
    """The canvas of 32 px digits that real digits at height×width are cut from (crop or pad, no stretch).

    An aspect ratio the models trained on uses that training canvas (so 24×40 → 24×40, any square → 32×32),
    which is the digit scale the diffuser learned for it; another keeps the area of 32×32.
    """
    from .tasks import CANVASES

    matches = [c for c in CANVASES if c[0] * width == c[1] * height]
    if matches:
        return min(matches, key=lambda c: abs(c[0] * c[1] - 32 * 32))
    r = math.sqrt(height / width)
    return max(1, round(32 * r)), max(1, round(32 / r))


def real_at(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """32 px test digits as they look at height×width: cut the reference canvas, then resize."""
    return resize(canvas(images, *reference_canvas(height, width)), height, width)


def balanced_split(labels: torch.Tensor, per_class: int, generator: torch.Generator):
    """Two disjoint index sets with ``per_class`` digits of each class, sorted by class."""
    first, second = [], []
    for d in range(10):
        idx = torch.nonzero(labels == d).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        first.append(idx[:per_class])
        second.append(idx[per_class:2 * per_class])
    return torch.cat(first), torch.cat(second)


# ---------------------------------------------------------------- evaluation

def _batches(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(total, start + size)


@torch.no_grad()
def decode_bounded(pipeline, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Decode a few images at a time so that memory stays bounded at large sizes."""
    step = max(1, DECODE_PIXELS // (height * width))
    return torch.cat([pipeline.decode(latents[a:b], height, width) for a, b in _batches(len(latents), step)])


@torch.no_grad()
def generate_and_score(pipeline, classifier: Classifier, height: int, width: int, n_per_class: int,
                       steps, cfg, sampler, eta, seed: int, batch: int, bar=None, spacing=P.DEFAULTS.spacing,
                       cfg_from=P.DEFAULTS.cfg_from) -> dict:
    """Generate n per class at height×width in bounded batches; keep only labels, features and a few for the grid."""
    digits = torch.arange(10).repeat_interleave(n_per_class)
    s = pipeline.settings(height, width, None, steps, cfg, eta, sampler, seed, spacing, cfg_from)
    per_batch = max(1, min(batch, batch * LATENT_TOKENS // (s.latent_height * s.latent_width)))
    preds, feats, shown, seconds = [], [], [], 0.0
    for i, (a, b) in enumerate(_batches(len(digits), per_batch)):
        s.seed = seed + i  # one reproducible stream per batch
        start = time.perf_counter()
        images = decode_bounded(pipeline, pipeline.sample_latents(digits[a:b], s), height, width)
        seconds += time.perf_counter() - start
        p, f = classify(classifier, images)
        preds.append(p)
        feats.append(f)
        keep = (torch.arange(a, b) % n_per_class) < GRID_PER_DIGIT
        shown.append(images[keep].float().cpu())
        if bar is not None:
            bar.update(b - a)
    preds = torch.cat(preds)
    correct = (preds == digits).float()
    return {"latent": (s.latent_height, s.latent_width), "accuracy": float(correct.mean()),
            "per_class": correct.view(10, n_per_class).mean(1).tolist(), "features": torch.cat(feats),
            "grid": torch.cat(shown), "seconds_per_image": seconds / len(digits), "batch": per_batch}


@torch.no_grad()
def autoencoder_figures(autoencoder, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                        reference: torch.Tensor) -> dict:
    """Reconstruction at RECON_SIZES (default latent), and 16 → 32 px resampling versus bicubic.

    The classifier judges the reconstructions as it judges generated digits: its accuracy on them, and
    their Fréchet distance to other real digits ``reference`` beside that of the inputs themselves (the
    floor), which bounds how sharp any generated digit can be.
    """
    def run(x, latent, out):  # a bounded number of pixels per call
        step = max(1, DECODE_PIXELS // (max(x.shape[-2:].numel(), out[0] * out[1])))
        return torch.cat([autoencoder.decode(autoencoder.encode(x[a:b], latent), out).clamp(-1, 1)
                          for a, b in _batches(len(x), step)])

    recon = {}
    for side in RECON_SIZES:
        x = resize(images, side, side)
        y = run(x, autoencoder.default_latent_size(side, side), (side, side))
        pred, feat = classify(classifier, y)
        _, feat_in = classify(classifier, x)
        _, feat_ref = classify(classifier, resize(reference, side, side))
        recon[str(side)] = {"latent": list(autoencoder.default_latent_size(side, side)),
                            "mse": float((y - x).pow(2).mean()), "psnr": float(psnr(y, x).mean()),
                            "accuracy": float((pred == labels).float().mean()),
                            "fd": frechet_distance(feat, feat_ref), "fd_floor": frechet_distance(feat_in, feat_ref)}
    small = resize(images, 16, 16)
    latent = autoencoder.default_latent_size(32, 32)
    upsampled = {"autoencoder": run(small, latent, (32, 32)),
                 "bicubic": F.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False).clamp(-1, 1)}
    resample = {name: {"psnr": float(psnr(y, images).mean()), "ssim": float(ssim(y, images).mean())}
                for name, y in upsampled.items()}
    return {"n": len(images), "reconstruction": recon, "resample_16_to_32": {"latent": list(latent), **resample}}


def evaluate(pipeline, classifier: Classifier, sizes, n_per_class: int = DEFAULT_N, steps=P.DEFAULTS.steps,
             cfg=P.DEFAULTS.cfg, sampler=P.DEFAULTS.sampler, eta=P.DEFAULTS.eta, seed: int = 0, out_dir="results/eval",
             real_images: torch.Tensor = None, real_labels: torch.Tensor = None, progress: bool = True,
             batch: int = 100, notes=(), spacing=P.DEFAULTS.spacing, cfg_from=P.DEFAULTS.cfg_from) -> dict:
    """Write report.md, report.json and grid_<H>x<W>.png into ``out_dir``; return the report as a dict.

    ``real_images`` [N, 1, 32, 32] / ``real_labels`` [N] are test digits: two disjoint class-balanced
    sets give the Fréchet reference and the real-versus-real floor, and the autoencoder figures.
    """
    from tqdm.auto import tqdm

    sizes = [check_size("size", s, LIMITS.side) for s in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one size")
    n_per_class = check_int("n per class", n_per_class, 1, 100_000)
    batch = check_int("batch", batch, 1, LIMITS.images)
    seed = check_int("seed", seed, 0, LIMITS.seed)
    pipeline.settings(32, 32, None, steps, cfg, eta, sampler, seed, spacing, cfg_from)  # fail before any work
    if real_images is None or real_labels is None or len(real_images) != len(real_labels):
        raise ValueError("real_images and real_labels (test digits, one label each) are required")
    counts = torch.bincount(real_labels, minlength=10)
    n_real = min(n_per_class, int(counts.min()) // 2)
    if n_real < 2:
        raise ValueError(f"need at least 4 real digits of each class, got {counts.tolist()}")
    notes = list(notes)
    if n_real < n_per_class:
        notes.append(f"only {int(counts.min())} real digits in the rarest class: the real sets hold "
                     f"{n_real} per class, not {n_per_class}")
    set_a, set_b = balanced_split(real_labels, n_real, torch.Generator().manual_seed(seed))
    classifier = classifier.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=10 * n_per_class * len(sizes), desc="eval", unit="img", disable=not progress)
    rows = []
    for height, width in sizes:
        bar.set_postfix_str(f"{height}x{width}")
        gen = generate_and_score(pipeline, classifier, height, width, n_per_class, steps, cfg, sampler, eta, seed,
                                 batch, bar, spacing, cfg_from)
        real_a, real_b = (real_at(real_images[idx], height, width) for idx in (set_a, set_b))
        pred_a, feat_a = classify(classifier, real_a)
        _, feat_b = classify(classifier, real_b)
        grid_path = out_dir / f"grid_{height}x{width}.png"
        save_grid(gen["grid"], grid_path, nrow=min(n_per_class, GRID_PER_DIGIT))
        rows.append({"height": height, "width": width, "latent": list(gen["latent"]),
                     "accuracy": gen["accuracy"], "per_class_accuracy": gen["per_class"],
                     "real_accuracy": float((pred_a == real_labels[set_a]).float().mean()),
                     "fd": frechet_distance(gen["features"], feat_a), "fd_floor": frechet_distance(feat_a, feat_b),
                     "seconds_per_image": gen["seconds_per_image"], "batch": gen["batch"], "grid": grid_path.name})
    bar.set_postfix_str("autoencoder")
    ae = autoencoder_figures(pipeline.autoencoder, classifier, real_images[set_a], real_labels[set_a],
                             real_images[set_b])
    bar.close()

    report = {"settings": {"n_per_class": n_per_class, "real_per_class": n_real, "steps": steps, "cfg": cfg,
                           "cfg_from": cfg_from, "sampler": sampler, "spacing": spacing, "eta": eta, "seed": seed,
                           "batch": batch, "clouds": pipeline.diffuser.config.num_clouds,
                           "threads": torch.get_num_threads()},
              "notes": notes, "sizes": rows, "autoencoder": ae}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    s, ae = report["settings"], report["autoencoder"]
    lines = ["# riid resolution-invariance report", "",
             f"{s['n_per_class']} digits per class and size; sampler {s['sampler']}, {s['steps']} steps "
             f"spaced in {s.get('spacing', 'time')}, "
             f"CFG {s['cfg']}" + (f" from log-SNR {s['cfg_from']}" if "cfg_from" in s else "") +
             f", eta {s['eta']}, seed {s['seed']}, batch {s['batch']}, CPU threads {s['threads']}"
             + (f", diffuser attention in {s['clouds']} clouds. " if s.get("clouds", 1) > 1 else ". ") +
             "Every image is padded to a square (background −1) and resized to 32×32 before the classifier "
             "sees it. Real digits at a size are 32 px test digits cut to the aspect ratio (crop or pad, no "
             f"stretch) and resized; FD floor: two disjoint real sets of {s['real_per_class']} per class.", ""]
    lines += [f"Note: {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    lines += ["| size (H×W) | latent | accuracy | real digits | worst digit | FD | FD floor (real vs real) "
              "| s / image |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["sizes"]:
        worst = min(range(10), key=lambda d: r["per_class_accuracy"][d])
        lines.append(f"| {r['height']}×{r['width']} | {r['latent'][0]}×{r['latent'][1]} | {r['accuracy']:.1%} | "
                     f"{r['real_accuracy']:.1%} | {worst} ({r['per_class_accuracy'][worst]:.0%}) | {r['fd']:.2f} | "
                     f"{r['fd_floor']:.2f} | {r['seconds_per_image']:.3f} |")
    lines += ["", f"## Autoencoder ({ae['n']} test digits)", "",
              "| size | latent | MSE ([-1, 1] scale) | PSNR (dB) | accuracy on reconstructions | FD of "
              "reconstructions | FD floor (real vs real) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for side, r in ae["reconstruction"].items():
        lines.append(f"| {side}×{side} | {r['latent'][0]}×{r['latent'][1]} | {r['mse']:.4f} | {r['psnr']:.2f} | "
                     f"{r['accuracy']:.1%} | {r['fd']:.2f} | {r['fd_floor']:.2f} |")
    rs = ae["resample_16_to_32"]
    lines += ["", f"Resampling: a 32 px digit downsampled to 16 px, encoded at 16 px to a {rs['latent'][0]}×"
              f"{rs['latent'][1]} latent, decoded at 32 px; against the true 32 px digit.", "",
              "| 16 → 32 px | PSNR (dB) | SSIM |", "| --- | --- | --- |"]
    for name in ("autoencoder", "bicubic"):
        lines.append(f"| {name} | {rs[name]['psnr']:.2f} | {rs[name]['ssim']:.4f} |")
    lines += ["", "## Samples (one row per digit)", ""]
    lines += [f"{r['height']}×{r['width']}: ![{r['height']}x{r['width']}]({r['grid']})" for r in report["sizes"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line

def add_eval_arguments(parser) -> None:
    parser.description = ("Resolution-invariance report: accuracy, Fréchet distance and sampling time per size, "
                          "and autoencoder reconstruction/resampling figures, written to --out.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="pipeline folder (default: the shipped checkpoints/)")
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER,
                        help="classifier folder (default: checkpoints/classifier)")
    parser.add_argument("--sizes", help=f"comma-separated sizes, a side or HxW (default {DEFAULT_SIZES}; "
                                        f"--fast: {FAST_SIZES})")
    parser.add_argument("--n", type=int, help=f"digits per class and size (default {DEFAULT_N}; --fast: {FAST_N})")
    parser.add_argument("--steps", type=int, default=P.DEFAULTS.steps, help=f"default {P.DEFAULTS.steps}")
    parser.add_argument("--cfg", type=float, default=P.DEFAULTS.cfg, help=f"default {P.DEFAULTS.cfg}")
    parser.add_argument("--cfg-from", type=float, default=P.DEFAULTS.cfg_from,
                        help=f"guidance start (log-SNR) (default {P.DEFAULTS.cfg_from})")
    parser.add_argument("--sampler", default=P.DEFAULTS.sampler, help=f"ddim or dpmpp (default {P.DEFAULTS.sampler})")
    parser.add_argument("--eta", type=float, default=P.DEFAULTS.eta, help=f"default {P.DEFAULTS.eta}")
    parser.add_argument("--spacing", default=P.DEFAULTS.spacing,
                        help=f"step spacing (default {P.DEFAULTS.spacing})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clouds", type=int, default=1, help="diffuser attention groups (default 1: full attention)")
    parser.add_argument("--batch", type=int, default=100,
                        help="images generated together at 32 px (fewer at larger sizes; default 100)")
    parser.add_argument("--out", type=Path, default=Path("results/eval"), help="output folder (default results/eval)")
    parser.add_argument("--data-root", default="data",
                        help="MNIST root (default data; falls back to the shipped 1,000-digit fixture)")
    parser.add_argument("--fast", action="store_true", help=f"n={FAST_N} and sizes {FAST_SIZES}: a quick check")


def load_test_digits(root) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from .data import load_mnist

    if str(root) == "fixture":
        images, labels = load_mnist("test", root="fixture")
        return images, labels, ["real digits: the shipped 1,000-digit test fixture"]
    try:
        images, labels = load_mnist("test", root=root)
        return images, labels, [f"real digits: the MNIST test set under {root} ({len(images):,} digits)"]
    except FileNotFoundError:
        images, labels = load_mnist("test", root="fixture")
        return images, labels, [f"MNIST not found under {root}: real digits are the shipped 1,000-digit test "
                                "fixture (run `riid data` for the full test set)"]


def run_eval_cli(args) -> None:
    from .checkpoint import load_model

    sizes = parse_sizes(args.sizes or (FAST_SIZES if args.fast else DEFAULT_SIZES))
    n = args.n if args.n is not None else (FAST_N if args.fast else DEFAULT_N)
    pipe = P.load_pipeline(args.checkpoint)
    pipe.use_clouds(args.clouds)
    if not Path(args.classifier).is_dir():
        raise ValueError(f"classifier folder not found: {args.classifier} "
                         "(train one: python -m riid.classifier --out checkpoints/classifier)")
    classifier = load_model(args.classifier, "classifier")
    images, labels, notes = load_test_digits(args.data_root)
    notes = [f"checkpoint {args.checkpoint}, classifier {args.classifier}"] + notes
    for note in notes:
        print(f"note: {note}")
    report = evaluate(pipe, classifier, sizes, n, args.steps, args.cfg, args.sampler, args.eta, args.seed, args.out,
                      images, labels, progress=True, batch=args.batch, notes=notes, spacing=args.spacing,
                      cfg_from=args.cfg_from)
    print(markdown(report).split("\n## Samples")[0])
    print(f"wrote report.md, report.json and {len(sizes)} grids to {args.out}")
