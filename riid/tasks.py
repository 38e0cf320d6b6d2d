"""What the training loop trains: the autoencoder task and the diffuser task.

Both draw training images on canvases of several aspect ratios (centre crop or pad of the
32 px digit, never a stretch) and latents at several densities, so the models see more
than one grid and learn the function rather than the grid."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import RIAE
from .checkpoint import save_model
from .coords import dual_coords
from .data import canvas
from .diffuser import R2ID, LabelConditioner
from .images import resize, save_grid
from .pipeline import MAX_LATENT_ASPECT, Pipeline, default_latent_size
from .schedule import add_noise, cosine_alpha_bar, prediction_target

# (height, width) canvases of a 32 px digit, from 3:5 to 5:3: the widest latent the pipeline
# diffuses (a wider output pads that latent's decode), so the widest canvas holds the whole digit
# padded as a wider output shows it. Wider canvases would only make the autoencoder slower.
WIDE = round(32 * MAX_LATENT_ASPECT)
CANVASES = ((32, 32), (24, 40), (40, 24), (32, 48), (48, 32), (24, 24), (40, 40), (32, WIDE),
            (WIDE, 32))
CANVAS_WEIGHTS = (4.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0)
# the autoencoder's latent side = canvas side / reduction × density: it learns to use any density
DENSITIES = (0.5, 0.75, 1.0, 1.5, 2.0)
DENSITY_WEIGHTS = (1.0, 1.0, 3.0, 1.0, 1.0)

# MSE learns a fresh autoencoder fastest; L1 (the median) then sharpens a trained decoder's strokes,
# but from scratch its easiest answer is the background that most points show
LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def draw(choices, weights, generator):
    return choices[torch.multinomial(torch.tensor(weights), 1, generator=generator).item()]


def sample_at(images: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The images' values [B, n, C] at dual coordinates [B, n, 4], read bicubically at the
    (jittered) point: the nearest pixel would teach the decoder a blur as wide as the jitter."""
    # absolute (x, y) in grid_sample's [-1, 1] cell-edge frame
    grid = coords[:, None, :, [3, 2]] * 2
    values = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return values[:, :, 0].transpose(1, 2).clamp(-1, 1)


def scaled_latent(height: int, width: int, reduction: int, density: float) -> tuple[int, int]:
    return max(1, round(height / reduction * density)), max(1, round(width / reduction * density))


class AutoencoderTask:
    """Encode a canvas at a random input resolution and latent density; read it at random points."""

    name = "autoencoder"

    def __init__(self, model: RIAE, images: torch.Tensor, batch_size: int = 64, points: int = 256,
                 preview_images: torch.Tensor | None = None, decoder_only: bool = False,
                 loss: str = "mse"):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.model, self.images, self.batch_size, self.points = model, images, batch_size, points
        self.loss_fn = LOSSES[loss]
        # fine-tune the decoder of a trained model; its latents stay as they are
        self.decoder_only = decoder_only
        for module in model.encoder_modules() if decoder_only else []:
            module.requires_grad_(False)
        self.preview_images = images[:8] if preview_images is None else preview_images[:8]

    def batch(self, generator, device) -> dict:
        idx = torch.randint(len(self.images), (self.batch_size,), generator=generator)
        height, width = draw(CANVASES, CANVAS_WEIGHTS, generator)
        full = canvas(self.images[idx], height, width)
        s = draw((0.5, 0.75, 1.0), (1.0, 1.0, 2.0), generator)
        source = resize(full, round(height * s), round(width * s))
        # the digit's own resolution: smaller outputs are area-averaged from it (Pipeline.decode)
        target = full
        th, tw = target.shape[-2:]
        coords = dual_coords(th, tw, self.batch_size, jitter=True, generator=generator)
        keep = torch.randperm(th * tw, generator=generator)[:self.points]
        coords = coords[:, keep]
        values = sample_at(target, coords)  # [B, n, C]
        lat = scaled_latent(height, width, self.model.config.reduction,
                            draw(DENSITIES, DENSITY_WEIGHTS, generator))
        return {"source": source.to(device), "coords": coords.to(device),
                "values": values.to(device), "latent_size": lat, "size": self.batch_size}

    def loss(self, model, batch):
        pred = model(batch["source"], batch["latent_size"], batch["coords"],
                     train_encoder=not self.decoder_only)
        return self.loss_fn(pred, batch["values"]), {}

    @torch.no_grad()
    def preview(self, ema_model: RIAE, out_dir: Path, history) -> None:
        x = self.preview_images
        latent = ema_model.encode(x, (8, 8))
        small = ema_model.decode(latent, (16, 16)).clamp(-1, 1)
        rows = [x, ema_model.decode(latent, (32, 32)).clamp(-1, 1),
                F.interpolate(small, size=(32, 32), mode="nearest"),
                resize(ema_model.decode(latent, (64, 64)).clamp(-1, 1), 32, 32)]
        save_grid(torch.cat(rows), out_dir / "reconstructions.png", nrow=len(x))

    def export(self, ema_model: RIAE, out_dir: Path) -> None:
        save_model(ema_model, Path(out_dir) / "autoencoder")


class DiffusionModel(nn.Module):
    """Diffuser + conditioner trained together. A share ``null_rate`` of the labels is dropped to
    the null condition, so one model learns both sides of classifier-free guidance."""

    def __init__(self, diffuser: R2ID, conditioner: LabelConditioner, null_rate: float = 0.15):
        super().__init__()
        self.diffuser, self.conditioner, self.null_rate = diffuser, conditioner, null_rate

    def forward(self, latents, labels, alpha_bar, noise, drop):
        """Per-sample MSE [B] of the head's answer (the noise or v); ``drop`` [B] (bool) marks
        labels set to the null."""
        cond = self.conditioner(self.conditioner.one_hot(labels.masked_fill(drop, -1)))
        out, = self.diffuser(add_noise(latents, alpha_bar, noise), alpha_bar, [cond])
        target = prediction_target(self.diffuser.config.prediction, latents, alpha_bar, noise)
        return (out - target).pow(2).flatten(1).mean(1)


class DiffuserTask:
    """Noise latents of random canvases (encoded by the frozen autoencoder on the latent the
    pipeline would diffuse for that canvas); predict the noise."""

    name = "diffuser"
    T_BINS = 20

    def __init__(self, model: DiffusionModel, autoencoder: RIAE, images: torch.Tensor,
                 labels: torch.Tensor, autoencoder_folder, batch_size: int = 128):
        self.model, self.autoencoder = model, autoencoder.eval().requires_grad_(False)
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.autoencoder_folder = Path(autoencoder_folder)
        self.loss_by_t, self.count_by_t = torch.zeros(self.T_BINS), torch.zeros(self.T_BINS)

    def batch(self, generator, device) -> dict:
        height, width = draw(CANVASES, CANVAS_WEIGHTS, generator)
        return self.batch_at(height, width, default_latent_size(height, width), generator, device)

    def batch_at(self, height: int, width: int, lat: tuple[int, int], generator, device) -> dict:
        """A batch on one canvas (height×width base pixels) encoded to one latent size."""
        # a steady token budget
        n = max(4, min(self.batch_size, self.batch_size * 64 // (lat[0] * lat[1])))
        idx = torch.randint(len(self.images), (n,), generator=generator)
        with torch.no_grad():
            images = canvas(self.images[idx], height, width).to(device)
            latents = self.autoencoder.encode(images, lat)
        t = torch.rand(n, generator=generator)
        drop = torch.rand(n, generator=generator) < self.model.null_rate
        return {"latents": latents, "labels": self.labels[idx].to(device), "drop": drop.to(device),
                "t": t, "alpha_bar": cosine_alpha_bar(t).to(device),
                "noise": torch.randn(latents.shape, generator=generator).to(device), "size": n}

    def loss(self, model, batch):
        losses = model(batch["latents"], batch["labels"], batch["alpha_bar"], batch["noise"],
                       batch["drop"])
        per_sample = losses.detach().float().cpu()
        bins = (batch["t"] * self.T_BINS).long().clamp(max=self.T_BINS - 1)
        self.loss_by_t.index_add_(0, bins, per_sample)
        self.count_by_t.index_add_(0, bins, torch.ones_like(per_sample))
        return losses.mean(), {}

    @torch.no_grad()
    def preview(self, ema_model: DiffusionModel, out_dir: Path, history) -> None:
        from matplotlib.figure import Figure

        pipe = Pipeline(self.autoencoder, ema_model.diffuser, ema_model.conditioner)
        digits = list(range(10))
        rows = [pipe.generate(digits, height=32, width=32, seed=0),
                resize(pipe.generate(digits, height=24, width=40, seed=1), 32, 32)]
        save_grid(torch.cat(rows), Path(out_dir) / "samples.png", nrow=10)
        centres = (torch.arange(self.T_BINS) + 0.5) / self.T_BINS
        fig = Figure(figsize=(5, 3), dpi=100)
        ax = fig.subplots()
        ax.plot(centres, self.loss_by_t / self.count_by_t.clamp(min=1), marker=".")
        ax.set(xlabel="t (0 clean, 1 noise)", ylabel="mean loss", yscale="log",
               title="loss versus t (since start)")
        fig.tight_layout()
        fig.savefig(Path(out_dir) / "loss_vs_t.png")

    def export(self, ema_model: DiffusionModel, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        save_model(ema_model.diffuser, out_dir / "diffuser")
        save_model(ema_model.conditioner, out_dir / "conditioner")
        if self.autoencoder_folder.resolve() != (out_dir / "autoencoder").resolve():
            shutil.copytree(self.autoencoder_folder, out_dir / "autoencoder", dirs_exist_ok=True)
