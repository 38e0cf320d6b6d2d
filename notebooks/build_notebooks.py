"""Write the tutorial notebooks (01–04) from the cell sources below, and optionally execute them.

    python notebooks/build_notebooks.py                 # regenerate the .ipynb files, without outputs
    python notebooks/build_notebooks.py --execute       # regenerate, then run each and save its outputs
    python notebooks/build_notebooks.py --execute --fast 03 04   # quick mode (RIID_FAST=1), some only
    python notebooks/build_notebooks.py --text 02       # new markdown only; the saved outputs are kept

The cells are kept here, not edited in JupyterLab, so that a change is one reviewable diff and
the committed notebooks never drift from their source. ``--execute`` runs them in a fresh
``python3`` kernel with the working directory ``notebooks/`` and writes the outputs in place,
which is how the committed notebooks get their figures. Without ``--fast``, RIID_FAST is
removed from the kernel's environment, so notebook 02 trains for its full length (see its first cell).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def md(text: str):
    return new_markdown_cell(dedent(text).strip())


def code(text: str):
    return new_code_cell(dedent(text).strip())


SETUP = code('''
    # Find the repository root, so that this notebook runs from notebooks/ or from the root.
    import os
    import sys
    from pathlib import Path

    ROOT = Path.cwd().resolve()
    while not (ROOT / "riid" / "__init__.py").is_file():
        if ROOT == ROOT.parent:
            raise RuntimeError("open this notebook from inside the riid repository")
        ROOT = ROOT.parent
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the library, even without `pip install -e .`
    FAST = os.environ.get("RIID_FAST") == "1"  # the test suite's quick mode

    %matplotlib inline
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    plt.rcParams.update({"figure.dpi": 72, "image.cmap": "gray", "image.interpolation": "nearest",
                         "font.size": 8, "axes.titlesize": 9})
    print("fast mode" if FAST else "normal mode")
''')

# A small plotting helper several notebooks share; plotting only, no model code.
SHOW_ROW = code('''
    def show_row(images, titles=(), height=1.3, suptitle=None):
        """Show images [1, H, W] (or [H, W]) in [-1, 1] side by side, each scaled to the same height."""
        images = [im.detach().float().reshape(im.shape[-2], im.shape[-1]) for im in images]
        ratios = [im.shape[1] / im.shape[0] for im in images]
        fig, axes = plt.subplots(1, len(images), figsize=(height * sum(ratios) + 0.2 * len(images), height + 0.35),
                                 gridspec_kw={"width_ratios": ratios}, squeeze=False)
        for ax, im, title in zip(axes[0], images, list(titles) + [""] * len(images)):
            ax.imshow(im, vmin=-1, vmax=1)
            ax.set_title(title)
            ax.axis("off")
        if suptitle:  # above the per-image titles, whatever the figure height
            fig.suptitle(suptitle, fontsize=9, y=1 + (0.3 if any(titles) else 0.05) / (height + 0.35))
        plt.show()
''')


# --------------------------------------------------------------------------------------------
# 01 · coordinates
# --------------------------------------------------------------------------------------------
def coordinates():
    return [
        md(r'''
            # 1 · Coordinates: pixels as samples of a continuous function

            RIAE and R2ID never see a pixel *grid*. Every pixel (of an image or of a latent) is a token that carries
            its value plus **where it sits** in a continuous domain. Change the resolution and you only change how
            densely that domain is sampled; the model learns the function, not the samples.

            This notebook shows the three ingredients, all from `riid.coords`:

            1. **cell centres**: a pixel's position is the centre of its cell, so grids of different sizes interleave;
            2. **two coordinate systems** side by side: *relative* (an inscribed square: composition never stretches)
               and *absolute* (edge-aware: the model knows where the borders are);
            3. **jitter** (training only) and the **Fourier features** the models actually read.

            At the end, sliders redraw everything for any height, width and jitter.
        '''),
        SETUP,
        md(r'''
            ## Cell centres

            The domain is the interval $[-0.5, 0.5]$ on each axis. A side of $n$ pixels cuts it into $n$ equal cells and
            puts each pixel at the centre of its cell: $c_i = (i + \tfrac12)/n - \tfrac12$.
            So a 4-pixel and an 8-pixel side cover the *same* interval, and the centres of the 8-grid sit exactly
            half-way around the centres of the 4-grid. (An endpoint `linspace(-0.5, 0.5, n)`, which the original code
            used, puts the first and last pixel *on* the border, and grids of different sizes no longer line up.)
        '''),
        code('''
            from riid.coords import cell_centres, dual_coords, fourier_features, grid_features, FREQ_EXPONENTS

            print("cell_centres(4) =", cell_centres(4).tolist())
            print("cell_centres(8) =", cell_centres(8).tolist())

            fig, axes = plt.subplots(1, 2, figsize=(9, 1.9), sharey=True)
            for ax, (name, positions) in zip(axes, [("cell centres (riid)", cell_centres),
                                                   ("endpoint linspace (original)",
                                                    lambda n: torch.linspace(-0.5, 0.5, n))]):
                for row, n in enumerate((4, 8, 16)):
                    ax.scatter(positions(n), [row] * n, s=14, zorder=3)
                    ax.vlines(torch.linspace(-0.5, 0.5, n + 1), row - 0.3, row + 0.3, color="0.8", lw=0.8)
                ax.set(title=name, yticks=[0, 1, 2], yticklabels=["n=4", "n=8", "n=16"], xlim=(-0.55, 0.55))
            plt.show()
        '''),
        md(r'''
            ## Two systems: relative and absolute

            `dual_coords(h, w)` returns four numbers per pixel, row-major: **(relative y, relative x, absolute y,
            absolute x)**.

            | system | longer side | shorter side | what it tells the model |
            | --- | --- | --- | --- |
            | relative | $[-0.5, 0.5]$ | $\pm 0.5 \cdot \text{short}/\text{long}$ | where a pixel is in an inscribed square: a digit's shape does not stretch with the aspect ratio |
            | absolute | $[-0.5, 0.5]$ | $[-0.5, 0.5]$ | how close a pixel is to each border of *this* canvas |

            For a square grid the two coincide. For a 6×10 grid the relative y only spans $\pm 0.3$, while the
            absolute y still spans the whole interval.
        '''),
        code('''
            c = dual_coords(6, 10)  # [batch, h*w, 4]
            print("shape", tuple(c.shape))
            for i, name in enumerate(["relative y", "relative x", "absolute y", "absolute x"]):
                print(f"{name:>10}: {c[0, :, i].min():+.3f} … {c[0, :, i].max():+.3f}")
        '''),
        code('''
            def square(ax):
                ax.plot([-0.5, 0.5, 0.5, -0.5, -0.5], [-0.5, -0.5, 0.5, 0.5, -0.5], color="0.7", lw=0.8)
                ax.set(xlim=(-0.55, 0.55), ylim=(0.55, -0.55), aspect="equal", xlabel="x", ylabel="y")

            fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.3))
            for n, size, colour in ((8, 30, "C0"), (16, 6, "C1")):
                g = dual_coords(n, n)[0]
                axes[0].scatter(g[:, 1], g[:, 0], s=size, c=colour, label=f"{n}×{n}")
            axes[0].set_title("8×8 and 16×16 interleave")
            for h, w, colour in ((6, 10, "C2"), (10, 6, "C3")):
                g = dual_coords(h, w)[0]
                axes[1].scatter(g[:, 1], g[:, 0], s=12, c=colour, label=f"{h}×{w}")
                axes[2].scatter(g[:, 3], g[:, 2], s=12, c=colour, label=f"{h}×{w}")
            axes[1].set_title("relative: inscribed square")
            axes[2].set_title("absolute: fills the square")
            for ax in axes:
                square(ax)
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7)
            plt.tight_layout()
            plt.show()
        '''),
        md(r'''
            The centre of the canvas has the same relative coordinates whatever its shape; only the edges move (by at
            most half the domain). That is why a model trained mostly on squares still draws an upright, unsquashed
            digit in a 24×40 canvas: in relative terms the digit's strokes are where they always were, and the absolute
            coordinates tell it where this canvas ends.

            ## Jitter (training only)

            In training each pixel's continuous position is moved by a Gaussian with a standard deviation of **half a
            pixel pitch** ($1/(2n)$ of the domain, per axis), drawn once per pixel and then mapped into both systems,
            so that relative and absolute always describe the same point. The model can no longer memorise a lattice:
            it has to answer for any point in between. At inference `jitter=False` (the default).
        '''),
        code('''
            gen = torch.Generator().manual_seed(0)
            fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.3))
            plain = dual_coords(8, 8)[0]
            for draw in range(3):
                j = dual_coords(8, 8, jitter=True, generator=gen)[0]
                axes[0].scatter(j[:, 1], j[:, 0], s=5, alpha=0.7)
            axes[0].scatter(plain[:, 1], plain[:, 0], s=22, marker="+", c="k")
            axes[0].set_title("8×8: three jittered draws (+ centres)")
            square(axes[0])

            j = dual_coords(6, 10, jitter=True, generator=gen)[0]
            p = dual_coords(6, 10)[0]
            for (y, x), colour in (((0, 1), "C1"), ((2, 3), "C0")):  # a line from each centre to its jittered point
                axes[1].plot(torch.stack([p[:, x], j[:, x]]), torch.stack([p[:, y], j[:, y]]), color=colour, lw=0.8)
                axes[1].scatter(j[:, x], j[:, y], s=8, c=colour)
            axes[1].set_title("6×10: absolute (blue), relative (orange)")
            square(axes[1])

            many = dual_coords(64, 64, batch=8, jitter=True, generator=gen)
            offset = (many[..., 2:] - dual_coords(64, 64)[..., 2:]) * 64  # in pixel pitches
            axes[2].hist(offset.flatten(), bins=60, density=True)
            axes[2].set(title=f"offset / pitch: std {offset.std():.3f}", xlabel="pixel pitches")
            plt.tight_layout()
            plt.show()
            # both systems moved by the same continuous offset: relative = absolute · side / longest side
            print("relative = absolute · (6/10, 10/10):", torch.allclose(j[:, :2], j[:, 2:] * torch.tensor([0.6, 1.0])))
        '''),
        md(r'''
            ## Fourier features: what the models read

            A coordinate is not fed in raw. For each of the four coordinates, `fourier_features` takes
            $\sin$ and $\cos$ of $\text{coordinate} \cdot \pi \cdot 2^k$ for $k = -3 \dots 7$ (11 frequencies, periods
            from 16 domains down to 1/64 of the domain), then layer-normalises the channels of each token:
            $4 \times 2 \times 11 = 88$ channels per pixel (`grid_features(h, w)`). The channels are laid out as
            *(sin, cos) × (rel y, rel x, abs y, abs x) × k*.

            Below: the sine channels of a 32×48 grid as images, one row per coordinate, one column per frequency.
            Low frequencies are smooth ramps (the position itself); high ones are fine stripes that only a dense grid
            can resolve; on a 48-pixel-wide grid the $k = 6, 7$ stripes alias (the model learns to use them where they
            help: in dense outputs). Compare *relative y* (row 1) with *absolute y* (row 3): at the same frequency the
            relative stripes are wider, because the relative frame squeezes the 32 rows into $\pm 1/3$ (the canvas is
            wider than tall), while the absolute frame stretches them over the whole interval. (The faint cross in the
            lowest frequencies is the per-token normalisation: it mixes a little of every coordinate into each channel.)
        '''),
        code('''
            h, w = 32, 48
            f = grid_features(h, w)[0].reshape(h, w, 2, 4, len(FREQ_EXPONENTS))  # [h, w, sin|cos, coord, k]
            print("grid_features:", tuple(grid_features(h, w).shape))
            names = ["rel y", "rel x", "abs y", "abs x"]
            fig, axes = plt.subplots(4, len(FREQ_EXPONENTS), figsize=(11, 2.9))
            for c, name in enumerate(names):
                for i, k in enumerate(FREQ_EXPONENTS):
                    ax = axes[c, i]
                    channel = f[:, :, 0, c, i]
                    lim = channel.abs().max()
                    ax.imshow(channel, cmap="RdBu", vmin=-lim, vmax=lim)
                    ax.set_xticks([]), ax.set_yticks([])
                    if c == 0:
                        ax.set_title(f"k={k}")
                    if i == 0:
                        ax.set_ylabel(name)
            fig.suptitle("sin(coordinate · π · 2^k) after channel normalisation, each on its own colour scale",
                         fontsize=9, y=1.04)
            plt.show()
        '''),
        md(r'''
            Because a pixel's feature depends only on its continuous position, a coarse and a fine grid sample the
            **same** feature function. Here is one channel (sin of relative x at $k = 2$) at four resolutions:
        '''),
        code('''
            sizes = (8, 16, 32, 64)
            fig, axes = plt.subplots(1, len(sizes), figsize=(7, 1.9))
            for ax, n in zip(axes, sizes):
                feat = grid_features(n, n)[0].reshape(n, n, 2, 4, len(FREQ_EXPONENTS))
                ax.imshow(feat[:, :, 0, 1, FREQ_EXPONENTS.index(2)], cmap="RdBu", vmin=-2.5, vmax=2.5)
                ax.set_title(f"{n}×{n}")
                ax.axis("off")
            plt.show()
        '''),
        md(r'''
            ## Try it

            `draw(height, width, jitter)` plots the grid's coordinates in both systems and three of its feature
            channels. It is called once here with fixed values (so the figure is saved in the notebook), then wired
            to sliders. Moving a slider needs a live kernel.
        '''),
        code('''
            def draw(height=6, width=10, jitter=False, seed=0):
                gen = torch.Generator().manual_seed(seed)
                c = dual_coords(height, width, jitter=jitter, generator=gen)
                feat = fourier_features(c)[0].reshape(height, width, 2, 4, len(FREQ_EXPONENTS))
                fig, axes = plt.subplots(1, 5, figsize=(11, 2.4), gridspec_kw={"width_ratios": [1.2, 1.2, 1, 1, 1]})
                for ax, (y, x, name) in zip(axes[:2], ((0, 1, "relative"), (2, 3, "absolute"))):
                    ax.scatter(c[0, :, x], c[0, :, y], s=max(2, 300 / (height * width) ** 0.8))
                    square(ax)
                    ax.set_title(f"{name} ({height}×{width})")
                for ax, (coord, k) in zip(axes[2:], ((0, 0), (3, 0), (1, 4))):
                    channel = feat[:, :, 0, coord, FREQ_EXPONENTS.index(k)]
                    lim = channel.abs().max()
                    ax.imshow(channel, cmap="RdBu", vmin=-lim, vmax=lim)
                    ax.set_title(f"sin {names[coord]}, k={k}")
                    ax.axis("off")
                plt.tight_layout()
                plt.show()

            draw(6, 10, jitter=True)
        '''),
        code('''
            try:
                from ipywidgets import Checkbox, IntSlider, interact
            except ImportError:
                print('ipywidgets is not installed: pip install -e ".[notebooks]" for the sliders')
            else:
                interact(draw, height=IntSlider(value=8, min=1, max=48, description="height"),
                         width=IntSlider(value=12, min=1, max=48, description="width"),
                         jitter=Checkbox(value=False, description="jitter"),
                         seed=IntSlider(value=0, min=0, max=9, description="seed"));
        '''),
    ]


# --------------------------------------------------------------------------------------------
# 02 · training
# --------------------------------------------------------------------------------------------
def training():
    return [
        md(r'''
            # 2 · Training the autoencoder and the diffuser

            The library has **one** training loop, `riid.train.train(task, config, out_dir)` (AdamW, warm-up + cosine
            decay, EMA of the weights, gradient accumulation, resumable state, built on Hugging Face Accelerate).
            What differs between the two models lives in a *task* object from `riid.tasks`: how to draw a batch, the
            loss, the preview images and the export. The `riid train-autoencoder` / `riid train-diffuser` commands are
            thin wrappers over exactly the calls below.

            Here both models train on a small subset (the 1,000 digits shipped with the package): enough to see the
            losses fall and rough digits appear, not to reach the shipped quality (see `checkpoints/README.md` for
            how those were trained).

            **How long it takes.** The two training cells take about 6 minutes together with one CPU thread
            (`OMP_NUM_THREADS=1`): 335 s of CPU time, which the machine's other work does not inflate. For the outputs
            saved here the whole notebook ran in 2 minutes of wall time on an idle 2-core CPU, two threads; each
            training cell prints both times. With the environment variable `RIID_FAST=1` (the test suite's mode) it
            uses the `tiny` presets and about fifteen steps each, and finishes in seconds.
        '''),
        SETUP,
        SHOW_ROW,
        md(r'''
            ## Data

            `load_mnist(root="fixture")` reads the 1,000 MNIST test digits shipped inside the package (28×28, resized
            bicubically to 32×32 and scaled to $[-1, 1]$, as the original). For real training use
            `load_mnist("train")` on the full set (`riid data` fetches it). We train on 900 and keep 100 aside
            for the previews.
        '''),
        code('''
            from riid.data import load_mnist
            from riid.images import grid

            images, labels = load_mnist("test", root="fixture")
            train_images, train_labels = images[:900], labels[:900]
            held_out = images[900:908]
            print("images", tuple(images.shape), f"in [{images.min():.0f}, {images.max():.0f}]")
            plt.figure(figsize=(7, 1.6))
            plt.imshow(grid(images[:20], nrow=10))
            plt.axis("off")
            plt.show()
        '''),
        md(r'''
            ## Settings

            `riid.presets` holds the named sizes (`default` is what the shipped checkpoints use, `tiny` is for tests).
            To train on a CPU in minutes we shrink the default with `dataclasses.replace` and take few steps.
            All output goes to a temporary folder.
        '''),
        code('''
            import dataclasses
            import tempfile
            import time

            from riid.presets import AUTOENCODER_PRESETS, DIFFUSER_PRESETS
            from riid.train import TrainConfig

            if FAST:
                ae_config = AUTOENCODER_PRESETS["tiny"]
                diffuser_config, conditioner_config = DIFFUSER_PRESETS["tiny"]
                ae_train = TrainConfig(steps=15, batch_size=8, warmup=5, ema_decay=0.9, preview_every=15)
                diffuser_train = TrainConfig(steps=15, batch_size=16, warmup=5, ema_decay=0.9, preview_every=15)
            else:
                ae_config = dataclasses.replace(AUTOENCODER_PRESETS["default"], dim=64, latent_channels=8,
                                                encoder_blocks=1, decoder_blocks=1, pixel_layers=2)
                diffuser_config, conditioner_config = DIFFUSER_PRESETS["default"]
                diffuser_config = dataclasses.replace(diffuser_config, dim=96, encoder_blocks=2, decoder_blocks=2)
                conditioner_config = dataclasses.replace(conditioner_config, dim=96)
                ae_train = TrainConfig(steps=300, batch_size=16, lr=2e-3, warmup=30, ema_decay=0.99,
                                       preview_every=300)
                diffuser_train = TrainConfig(steps=300, batch_size=32, lr=2e-3, warmup=30, ema_decay=0.99,
                                             preview_every=300)
            # the diffuser reads the autoencoder's latents and the conditioner's tokens
            diffuser_config = dataclasses.replace(diffuser_config, latent_channels=ae_config.latent_channels,
                                                  cond_dim=conditioner_config.dim)
            OUT = Path(tempfile.mkdtemp(prefix="riid_notebook_"))
            print(ae_config, diffuser_config, conditioner_config, sep="\\n")


            def timed(run):
                """Run ``run()`` and print its wall and CPU time: CPU time is what other jobs on the machine
                do not inflate (with one thread it is the time on an idle CPU)."""
                wall, cpu = time.time(), time.process_time()
                summary = run()
                print(f"{summary['steps']} steps in {time.time() - wall:.0f} s "
                      f"({time.process_time() - cpu:.0f} s of CPU time, {torch.get_num_threads()} thread(s)), "
                      f"final loss {summary['final_loss']:.4f}")
                return summary
        '''),
        md(r'''
            ## 1 · The autoencoder (RIAE)

            `AutoencoderTask` draws each batch on a random canvas (32×32 mostly, also 24×40, 40×24, 48×32, …: the digit
            is centre-cropped or padded, never stretched), feeds it at a random input resolution, encodes it to a latent
            of a random density, and asks the decoder for the colour at a few hundred random, jittered points of the
            target. So the model is never trained on one grid.

            The loss is an error at those points. The shipped autoencoder trains on the mean absolute error (L1, the
            task's default: sharper strokes), but in a short run from scratch L1's easiest answer is an empty canvas:
            most points are background, and L1 is content with the median. Measured here, 300 steps with L1 still
            drew blank canvases, while the mean squared error (`loss="mse"`) drew rough digits, so this notebook
            uses MSE.
        '''),
        code('''
            from riid.autoencoder import RIAE
            from riid.tasks import AutoencoderTask
            from riid.train import load_state, train

            ae_task = AutoencoderTask(RIAE(ae_config), train_images, ae_train.batch_size, preview_images=held_out,
                                      loss="mse")
            timed(lambda: train(ae_task, ae_train, OUT / "autoencoder"))
        '''),
        md(r'''
            `train` writes into its folder the full resumable state (`state.pt`, with the loss history), the slim EMA
            export that ships (`autoencoder/config.json` + `model.safetensors`), and previews. The history gives the
            loss curve; `reconstructions.png` shows held-out digits (row 1) encoded to an 8×8 latent and decoded at
            32 (row 2), 16 (row 3, upscaled) and 64 px (row 4, downscaled).
        '''),
        code('''
            from PIL import Image

            def plot_history(folder, keys=("loss",), title=""):
                """Loss per step from the saved training state (faint), and its moving average."""
                history = load_state(folder / "state.pt")["history"]
                steps = np.array([h["step"] for h in history])
                window = max(1, len(history) // 25)
                fig, ax = plt.subplots(figsize=(5, 2.4))
                for i, key in enumerate(keys):
                    values = np.array([h[key] for h in history])
                    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                    ax.plot(steps, values, lw=0.5, alpha=0.3, color=f"C{i}")
                    ax.plot(steps[window - 1:], smooth, lw=1.2, color=f"C{i}", label=f"{key} (mean of {window})")
                ax.set(xlabel="step", yscale="log", title=title)
                ax.legend()
                plt.show()


            def show_png(path, scale=1.0):
                """A PNG written by train(), at its own pixel size times ``scale``."""
                image = Image.open(path)
                plt.figure(figsize=(image.width * scale / 72, image.height * scale / 72))
                plt.imshow(image)
                plt.axis("off")
                plt.show()


            plot_history(OUT / "autoencoder", title="autoencoder: MSE at random points")
            show_png(OUT / "autoencoder" / "reconstructions.png", scale=2)
        '''),
        md(r'''
            ## 2 · The diffuser (R2ID)

            The diffuser is trained on latents of the *frozen* autoencoder we just exported. `DiffusionModel` holds the
            diffuser and the label conditioner; `DiffuserTask` encodes canvases of random shapes at random latent
            densities, noises them at a random time of the cosine schedule, and the loss is the error of the head's
            answer, v. 15% of the labels are swapped for the null (all-zeros) condition, so the same model also predicts without
            a label, which is what classifier-free guidance needs. Its export folder becomes a complete pipeline: `autoencoder/`, `diffuser/`, `conditioner/`.
        '''),
        code('''
            from riid.checkpoint import load_model
            from riid.diffuser import R2ID, LabelConditioner
            from riid.tasks import DiffuserTask, DiffusionModel

            autoencoder = load_model(OUT / "autoencoder" / "autoencoder", "riae")
            model = DiffusionModel(R2ID(diffuser_config), LabelConditioner(conditioner_config))
            diffuser_task = DiffuserTask(model, autoencoder, train_images, train_labels,
                                         autoencoder_folder=OUT / "autoencoder" / "autoencoder",
                                         batch_size=diffuser_train.batch_size)
            timed(lambda: train(diffuser_task, diffuser_train, OUT / "pipeline"))
            print("pipeline folder:", sorted(p.name for p in (OUT / "pipeline").iterdir() if p.is_dir()))
        '''),
        md(r'''
            The loss is noisy (each step draws new times $t$); the loss-versus-$t$ curve shows why: in almost-clean
            latents ($t \to 0$) the little noise there is hard to tell from the digit, and near pure noise ($t \to 1$)
            v is almost minus the clean latent itself, which only the label can suggest, so the error rises again.
        '''),
        code('''
            plot_history(OUT / "pipeline", keys=("loss",), title="diffuser: v-prediction MSE")
            show_png(OUT / "pipeline" / "loss_vs_t.png", scale=0.8)
        '''),
        md(r'''
            ## 3 · Samples

            `load_pipeline(folder)` rebuilds the three models from their folders. `generate` diffuses a latent per digit
            (classifier-free guidance, DPM-Solver++ by default) and decodes it at any size: digits 0 to 9, the same
            seed, three resolutions and a non-square canvas.

            Expect little. A few minutes are enough for the autoencoder to reconstruct rough digits (above), but the
            diffuser has only begun: its samples are blobs with roughly the mass and place of a digit, the same blob
            at every resolution. Legible digits take tens of minutes on the full 60,000-digit training set; the shipped
            checkpoints used in notebooks 03 and 04 were trained that way (`checkpoints/README.md`).
        '''),
        code('''
            from riid.pipeline import load_pipeline

            pipe = load_pipeline(OUT / "pipeline")
            digits = list(range(10))
            steps = 10 if FAST else 20
            for height, width in ((16, 16), (32, 32), (64, 64), (24, 40)):
                samples = pipe.generate(digits, height=height, width=width, steps=steps, seed=0)
                show_row(samples, height=0.8, suptitle=f"{height}×{width}")
        '''),
        md(r'''
            ## Next

            - The same runs from a shell, on the full training set, each model in its own run folder:

              ```
              riid data                                      # MNIST into data/MNIST/raw
              riid train-autoencoder --out runs/ae --preset default
              riid train-diffuser --out runs/r2id --autoencoder runs/ae/autoencoder --preset default
              ```

              `runs/r2id` then holds a complete pipeline (`autoencoder/`, `diffuser/`, `conditioner/`) for
              `riid sample --checkpoint runs/r2id`. Add `--resume` to continue an interrupted run in its own folder;
              use `accelerate launch` for GPUs.
            - Notebook 03 looks inside the latents; notebook 04 measures resolution invariance with the shipped weights.

            The temporary folder is removed below; set `KEEP = True` to keep the trained pipeline.
        '''),
        code('''
            import shutil

            KEEP = False
            if not KEEP:
                shutil.rmtree(OUT, ignore_errors=True)
        '''),
    ]


LOAD_PIPELINE = code('''
    from riid.pipeline import default_checkpoint, load_pipeline

    torch.set_grad_enabled(False)  # inference only
    # $RIID_CHECKPOINTS names another pipeline folder (e.g. one trained in notebook 02, or the tests' tiny one)
    CHECKPOINT = default_checkpoint()
    pipe = load_pipeline(CHECKPOINT)
    print("pipeline:", CHECKPOINT.relative_to(ROOT) if CHECKPOINT.is_relative_to(ROOT) else CHECKPOINT)
    ae = pipe.autoencoder
    print(f"latent channels {ae.config.latent_channels}, reduction {ae.config.reduction}; parameters: "
          f"autoencoder {sum(p.numel() for p in ae.parameters()) / 1e6:.2f} M, "
          f"diffuser {sum(p.numel() for p in pipe.diffuser.parameters()) / 1e6:.2f} M")
''')


# --------------------------------------------------------------------------------------------
# 03 · latents
# --------------------------------------------------------------------------------------------
def latents():
    return [
        md(r'''
            # 3 · Inside the latent space of RIAE

            RIAE's encoder lets the coordinates of a latent grid ask (cross-attention) the pixels of an image what is
            there; its decoder lets the coordinates of output pixels ask the latent tokens. Neither side assumes a
            grid size, so the latent is itself a sampled function: encode at any resolution into any latent size,
            decode it at any size and aspect ratio.

            This notebook uses the shipped pipeline (`checkpoints/`); set the environment variable `RIID_CHECKPOINTS`
            to use another pipeline folder.
        '''),
        SETUP,
        SHOW_ROW,
        LOAD_PIPELINE,
        code('''
            from riid.data import canvas, load_mnist
            from riid.images import resize
            from riid.pipeline import default_latent_size

            images, labels = load_mnist("test", root="fixture", limit=100)
            digit = images[labels == 3][:1]  # one real test digit, [1, 1, 32, 32]
        '''),
        md(r'''
            ## Encode at several resolutions and latent sizes

            The same digit is given to the encoder at 16, 32 and 64 px and encoded into latents of 4×4, 8×8, 12×12
            and 16×16. The pipeline diffuses on `default_latent_size(height, width)`: 12 tokens across the shorter
            side, whatever the resolution, so 12×12 for any square. Every latent is decoded back at 32 px and compared with the
            32 px original (MSE on the $[-1, 1]$ scale). Read across a row to see how much detail each latent size
            keeps, and down a column to see how little the input resolution changes it (a 16 px input has lost detail
            before the encoder sees it, so its row cannot be sharper than its input).
        '''),
        code('''
            inputs = {side: resize(digit, side, side) for side in (16, 32, 64)}
            latent_sides = (4, 8, default_latent_size(32, 32)[0], 16)
            for side, x in inputs.items():
                recon = [pipe.decode(ae.encode(x, (n, n)), 32, 32) for n in latent_sides]
                errors = [(r - digit).pow(2).mean().item() for r in recon]
                titles = [f"input {side}×{side}"]
                titles += [f"latent {n}×{n}\\nMSE {e:.3f}" for n, e in zip(latent_sides, errors)]
                show_row([x[0]] + [r[0] for r in recon], titles, height=1.2)
        '''),
        md(r'''
            ## The latent channels

            An 8×8 latent of this digit, one image per channel, above the same digit encoded into 16×16. Nothing in
            the latent is a picture of the digit, but each channel is a function of position: where the model treats
            the latent as a sampled function, the 16×16 channel looks like a denser version of the 8×8 one.
            (The encoder ends with a layer normalisation over channels, so every latent token has zero mean and unit
            variance across its channels.)
        '''),
        code('''
            z8, z16 = ae.encode(digit, (8, 8)), ae.encode(digit, (16, 16))
            channels = z8.shape[1]
            cols = min(channels, 8)
            rows = (channels + cols - 1) // cols
            fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 0.95, 2.2 * rows), squeeze=False)
            for i in range(channels):
                r, c = divmod(i, cols)
                lim = max(z8[0, i].abs().max(), z16[0, i].abs().max()).item()
                axes[2 * r, c].imshow(z8[0, i], cmap="RdBu", vmin=-lim, vmax=lim)
                axes[2 * r + 1, c].imshow(z16[0, i], cmap="RdBu", vmin=-lim, vmax=lim)
                axes[2 * r, c].set_title(f"channel {i}", fontsize=7)
            for ax in axes.flat:
                ax.axis("off")
            fig.suptitle("each channel at 8×8 (upper) and 16×16 (lower)", fontsize=9)
            plt.show()
        '''),
        md(r'''
            ## The channels as colour (PCA)

            To see all channels at once, fit a principal-component analysis on the tokens of many 8×8 latents and map
            the first three components to red, green and blue (one basis and one colour scale for every picture).

            Row 2 does this on the latents as they are. Every latent token was produced by a query that knows only its
            position, so much of what a token holds is *where* it is, and the main components mostly paint position:
            the digits look alike. Rows 3 to 5 first subtract the average latent of those digits (at the same latent
            size), leaving what is particular to each digit; the same digits at 4×4, 8×8 and 16×16 show how that
            carries over between densities.
        '''),
        code('''
            many = images[:64]
            shown = slice(0, 8)


            def pca_colours(z):
                """A map of latents [N, C, h, w] → RGB [N, h, w, 3], fitted on the tokens of ``z``."""
                tokens = z.permute(0, 2, 3, 1).reshape(-1, channels)  # [N·h·w, C]
                mean = tokens.mean(0)
                _, _, v = torch.linalg.svd(tokens - mean, full_matrices=False)
                basis = v[:3].T  # [C, 3]
                projected = (tokens - mean) @ basis
                low, high = projected.quantile(0.02, dim=0), projected.quantile(0.98, dim=0)
                return lambda z: (((z.permute(0, 2, 3, 1) - mean) @ basis - low) / (high - low)).clamp(0, 1)


            z_many = {n: ae.encode(many, (n, n)) for n in (4, 8, 16)}
            raw_rgb = pca_colours(z_many[8])
            average = {n: z.mean(0, keepdim=True) for n, z in z_many.items()}  # the average latent at each size
            residual_rgb = pca_colours(z_many[8] - average[8])
            rows = [("digit", many[shown]), ("8×8 as is", raw_rgb(z_many[8][shown]))]
            rows += [(f"{n}×{n} − avg", residual_rgb(z_many[n][shown] - average[n])) for n in (4, 8, 16)]
            fig, axes = plt.subplots(len(rows), 8, figsize=(8 * 0.95, len(rows) * 1.0))
            for row, (name, pictures) in enumerate(rows):
                for col, picture in enumerate(pictures):
                    axes[row, col].imshow(picture[0] if name == "digit" else picture, vmin=-1, vmax=1)
                    axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
                axes[row, 0].set_ylabel(name)
            plt.show()
        '''),
        md(r'''
            ## Decode one latent at any size and aspect ratio

            The 8×8 latent of our digit, decoded at 8 to 128 px: every output pixel is an independent query of the same
            function (`decode` runs them in chunks, so memory stays bounded even at megapixel sizes).
        '''),
        code('''
            sides = (8, 16, 32, 64, 128)
            show_row([pipe.decode(z8, s, s)[0] for s in sides], [f"{s}×{s}" for s in sides], height=1.5,
                     suptitle="one 8×8 latent, decoded at five sizes")
        '''),
        md(r'''
            Aspect ratios work the same way. A wide canvas (the digit padded to 32×48) encodes to a wide 8×12 latent,
            which decodes at any size of the same shape.
        '''),
        code('''
            wide = canvas(digit, 32, 48)
            z_wide = ae.encode(wide, (8, 12))
            show_row([wide[0]] + [pipe.decode(z_wide, h, w)[0] for h, w in ((16, 24), (32, 48), (64, 96))],
                     ["input 32×48", "8×12 → 16×24", "→ 32×48", "→ 64×96"], height=1.4)
        '''),
        md(r'''
            ## Decode to another aspect ratio

            What should a *square* latent give on a wide or tall canvas? The latent describes a square image; a wider
            frame holds nothing more of it. So `decode` never stretches: at another aspect ratio it draws the latent's
            content at the latent's own aspect, as large as fits (`riid.autoencoder.fitted_size`), centred on a
            background canvas. A square digit decoded at 24×40 is the 24×24 digit with 8 background columns each
            side; at 40×24, 8 background rows above and below.

            Below, each row is one aspect: the original digit at the inner size padded to the canvas
            (`canvas(resize(digit, 24, 24), 24, 40)`), the square latent decoded there, their difference, and, for
            comparison, the original stretched to fill the canvas. The MSE in each title is against the padded
            original. The table after the figures does the same for 50 test digits, and checks that the digit
            inside the wide canvas is exactly the square decode at the inner size: the extra columns add background,
            never a stretch.
        '''),
        code('''
            from riid.autoencoder import fitted_size

            z = ae.encode(digit, default_latent_size(32, 32))  # the square 12×12 latent the pipeline diffuses


            def mse(a, b):
                return (a - b).pow(2).mean().item()


            for h, w in ((32, 32), (24, 40), (40, 24), (32, 64), (64, 32)):
                inner = fitted_size(z.shape[-2:], (h, w))  # the box the square content fills, unstretched
                padded = canvas(resize(digit, *inner), h, w)  # the original, unstretched on the same canvas
                decoded = pipe.decode(z, h, w)
                stretched = resize(digit, h, w)
                show_row([padded[0], decoded[0], (decoded - padded)[0].abs() - 1, stretched[0]],
                         ["original, padded", f"decoded\\nMSE {mse(decoded, padded):.3f}", "|difference|",
                          f"stretched\\nMSE {mse(stretched, padded):.3f}"], height=1.3 * max(1, h / w),
                         suptitle=f"{z.shape[-2]}×{z.shape[-1]} latent → {h}×{w}: the digit fills "
                                  f"{inner[0]}×{inner[1]}")

            # the same for many test digits: MSE against the padded originals, and the content box against a
            # decode at the inner size itself
            batch = images[:10] if FAST else images[:50]
            zs = ae.encode(batch, default_latent_size(32, 32))
            print(f"{len(batch)} test digits")
            print("canvas  content  MSE decoded  MSE stretched  max |box − square decode|")
            for h, w in ((32, 32), (24, 40), (40, 24), (32, 64), (64, 32)):
                ih, iw = fitted_size(zs.shape[-2:], (h, w))
                top, left = (h - ih) // 2, (w - iw) // 2
                padded = canvas(resize(batch, ih, iw), h, w)
                decoded = pipe.decode(zs, h, w)
                box = decoded[..., top:top + ih, left:left + iw]
                print(f"{h:>3}×{w:<3} {ih:>3}×{iw:<3}  {mse(decoded, padded):11.4f}  "
                      f"{mse(resize(batch, h, w), padded):13.4f}  {(box - pipe.decode(zs, ih, iw)).abs().max():.2e}")
        '''),
        md(r'''
            ## Interpolating between two latents

            Two digits, encoded to 8×8, mixed with a weight $t$ from 0 to 1 and decoded at 32 px. *Linear*
            interpolation averages the tokens, which shrinks their length half-way (the latent tokens all have norm
            $\sqrt{C}$); *slerp* (spherical interpolation, token by token over the channels) keeps it, so the
            in-between latents look like latents the decoder was trained on.
        '''),
        code('''
            za = ae.encode(images[labels == 3][:1], (8, 8))
            zb = ae.encode(images[labels == 8][:1], (8, 8))

            def slerp(a, b, t):
                """Spherical interpolation of each token (dimension 1 = channels)."""
                cos = ((a * b).sum(1, keepdim=True) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True)))
                omega = cos.clamp(-1 + 1e-6, 1 - 1e-6).acos()
                return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)

            ts = torch.linspace(0, 1, 9).tolist()
            for name, mix in (("linear", lambda t: (1 - t) * za + t * zb), ("slerp", lambda t: slerp(za, zb, t))):
                zs = torch.cat([mix(t) for t in ts])
                norms = zs.norm(dim=1).mean((1, 2)) / channels ** 0.5
                show_row(pipe.decode(zs, 32, 32), [f"t={t:.2f}\\n|z|={n:.2f}·√C" for t, n in zip(ts, norms)],
                         height=0.9, suptitle=name)
        '''),
    ]


# --------------------------------------------------------------------------------------------
# 04 · resolution invariance
# --------------------------------------------------------------------------------------------
def resolution_invariance():
    return [
        md(r'''
            # 4 · Resolution invariance: one model, every size and aspect ratio

            The shipped models were trained on 32 px MNIST digits, on a few canvas shapes and latent densities
            (`checkpoints/README.md` says exactly how). Here the pipeline draws the same digit from 16 to 256 px and
            at aspect ratios from 1:3 to 3:1, shows how a sample emerges from noise, and plots the evaluation figures
            across sizes.
            Set `RIID_CHECKPOINTS` to use another pipeline folder.
        '''),
        SETUP,
        SHOW_ROW,
        LOAD_PIPELINE,
        code('''
            from riid.pipeline import default_latent_size
            from riid.samplers import SAMPLERS

            DEFAULTS = pipe.defaults  # the checkpoint's sampling defaults
            DIGIT, SEED = 3, 0
            STEPS = 10 if FAST else DEFAULTS.steps
            print(f"digit {DIGIT}, seed {SEED}, {STEPS} steps of {DEFAULTS.sampler} spaced in {DEFAULTS.spacing}, "
                  f"guidance {DEFAULTS.cfg} from log-SNR {DEFAULTS.cfg_from}")
        '''),
        md(r'''
            ## One latent, any output size

            First the cleanest test: diffuse **one** latent (the default 12×12 of a square digit) with a fixed seed,
            then decode that same latent at seven output sizes. Nothing but the decoder's query density changes.
        '''),
        code('''
            settings = pipe.settings(32, 32, steps=STEPS, seed=SEED)
            z = pipe.sample_latents([DIGIT], settings)
            sides = (16, 24, 32, 48, 64, 128, 256)
            show_row([pipe.decode(z, s, s)[0] for s in sides], [f"{s}×{s}" for s in sides], height=1.4)
        '''),
        md(r'''
            ## Diffusing at each size

            Now a full request at each size, four samples each, always with the same seed. The latent comes from
            one rule, `riid.pipeline.default_latent_size`: 12 tokens across the shorter side, at every resolution,
            so every square diffuses a 12×12 latent and only the decoder's query density follows the output. (A
            latent that grew with the output would be denser than anything the diffuser was trained on, and slow;
            the README's evaluation measures what this rule gives at each size.) With one seed and one latent, the
            four digits of a row are the same at every size, up to the detail each size can show.
        '''),
        code('''
            sides = (16, 32, 64) if FAST else (16, 24, 28, 32, 48, 64, 128, 256)
            for s in sides:
                out = pipe.generate([DIGIT] * 4, height=s, width=s, steps=STEPS, seed=SEED)
                latent = default_latent_size(s, s)
                show_row(out, height=1.0, suptitle=f"{s}×{s} (latent {latent[0]}×{latent[1]})")
        '''),
        md(r'''
            ## Aspect ratios from 1:3 to 3:1

            Non-square canvases at a 32 px shorter side (width:height 4:3, 16:9, 2:1 and 3:1, and each turned),
            again from the same seed. The latent takes the output's aspect with 12 tokens across its shorter side,
            up to 5:3, the widest canvas the diffuser trained on; past that (16:9, 2:1, 3:1) the digit is drawn on
            the 5:3 latent and the decoder centres it, unstretched, on the longer canvas, as a real digit on that
            canvas looks. The relative coordinates keep the digit upright and unsquashed, the absolute ones tell
            the model where this canvas ends.
        '''),
        code('''
            shapes = ((24, 40), (96, 32)) if FAST else \\
                ((32, 43), (43, 32), (32, 57), (57, 32), (32, 64), (64, 32), (32, 96), (96, 32))
            for h, w in shapes:
                latent = default_latent_size(h, w)
                show_row(pipe.generate([DIGIT] * 4, height=h, width=w, steps=STEPS, seed=SEED),
                         height=1.1 * max(1, h / w) ** 0.5, suptitle=f"{h}×{w} (latent {latent[0]}×{latent[1]})")
        '''),
        md(r'''
            ## The denoising trajectory

            Every sampler takes a `callback(step, x, x0)`, called after each step with the current noisy latent `x` and
            the model's estimate of the clean latent `x0`. Decoding both at 32 px shows the digit settle: the estimate
            is a blurry average early on and sharpens as the noise is removed.
        '''),
        code('''
            trajectory = []
            settings = pipe.settings(32, 32, steps=STEPS, seed=SEED)
            pipe.sample_latents([DIGIT], settings, callback=lambda step, x, x0: trajectory.append((step, x, x0)))
            keep = trajectory[:: max(1, len(trajectory) // 8)][:8] + trajectory[-1:]
            show_row([pipe.decode(x, 32, 32)[0] for _, x, _ in keep], [f"step {s + 1}" for s, _, _ in keep],
                     height=0.95, suptitle="current sample x")
            show_row([pipe.decode(x0, 32, 32)[0] for _, _, x0 in keep], [f"step {s + 1}" for s, _, _ in keep],
                     height=0.95, suptitle="estimate of the clean latent x0")
        '''),
        md(r'''
            ## Evaluation across sizes

            `riid eval` (`riid.eval.report`) generates digits of every class at a table of sizes and scores them
            with two judges trained on MNIST (`checkpoints/classifier`, `checkpoints/realism`): the class accuracy
            (does the classifier read the requested digit?), the realism (the Fréchet distance of the realism
            network's features to real test digits at the same size, beside the real-versus-real floor), the
            within-class variety against real digits, and the sampling time. Every image is cropped to its ink and
            padded to a square before the judges see it, so a squashed digit cannot pass.

            The figures are read from `results/eval/report.json`, which `riid eval` writes. In the test suite's quick
            mode (`RIID_FAST=1`), or when that file is missing, a small report is computed here with
            `riid.eval.report.evaluate` (a few digits per class, so expect noise); if the judges' weights are
            missing too, the cell says so.
        '''),
        code('''
            import json
            import tempfile

            from IPython.display import Markdown, display

            REPORT = ROOT / "results" / "eval" / "report.json"


            def report_on_the_fly():
                \"\"\"A small report from riid.eval, or None (with a note) when the judges cannot be loaded.\"\"\"
                try:
                    from riid.data import load_mnist
                    from riid.eval.report import Judges, evaluate
                    judges = Judges.load()
                except (ImportError, ValueError, FileNotFoundError) as err:
                    display(Markdown(f"**No evaluation to show.** There is no `results/eval/report.json` "
                                     f"(`riid eval` writes it) and the judges could not be loaded: {err}"))
                    return None, None
                sizes = [(16, 16), (32, 32), (24, 40)] if FAST else \\
                    [(16, 16), (28, 28), (32, 32), (64, 64), (128, 128), (32, 43), (32, 64), (96, 32)]
                out = Path(tempfile.mkdtemp(prefix="riid_eval_"))
                report = evaluate(pipe, judges, load_mnist("test", root="fixture"), pipe.settings(steps=STEPS),
                                  sizes=sizes, n_per_class=2 if FAST else 10, out_dir=out, progress=False)
                display(Markdown(f"Computed here: {report['settings']['n_per_class']} digits per class and size "
                                 "(`riid eval` uses 100)."))
                return report, out


            if REPORT.is_file() and not FAST:
                report, report_dir = json.loads(REPORT.read_text()), REPORT.parent
                print(f"read {REPORT.relative_to(ROOT)}")
            else:
                report, report_dir = report_on_the_fly()
        '''),
        code('''
            if report is not None:
                rows = report["sizes"]
                names = [f"{r['height']}×{r['width']}" for r in rows]
                at = np.arange(len(rows))
                panels = 4 if all("variety_ratio" in r for r in rows) else 3
                fig, axes = plt.subplots(1, panels, figsize=(3.7 * panels, 2.8))
                axes[0].bar(at, [100 * r["accuracy"] for r in rows])
                axes[0].plot(at, [100 * r["real_accuracy"] for r in rows], "k_", ms=12, mew=2)
                axes[0].set(ylabel="class accuracy (%)", ylim=(0, 105), title="accuracy (black: real digits)")
                axes[1].bar(at, [r["fd"] for r in rows])
                axes[1].plot(at, [r["fd_floor"] for r in rows], "k_", ms=12, mew=2)
                axes[1].set(ylabel="Fréchet distance", title="realism: FD to real (black: real floor)")
                if panels == 4:
                    axes[2].bar(at, [r["variety_ratio"] for r in rows])
                    axes[2].axhline(1, color="k", lw=1)
                    axes[2].set(ylabel="× real digits", title="within-class variety")
                axes[-1].bar(at, [1000 * r["seconds_per_image"] for r in rows])
                axes[-1].set(ylabel="ms per image", title=f"sampling time ({report['settings']['steps']} steps)")
                for ax in axes:
                    ax.set_xticks(at, names, rotation=45)
                plt.tight_layout()
                plt.show()

                ae = report["autoencoder"]
                print("autoencoder reconstruction MSE:",
                      ", ".join(f"{side} px {r['mse']:.4f}" for side, r in ae["reconstruction"].items()))
                resample = ae["resample_16_to_32"]
                print(f"16 → 32 px resampling, PSNR: autoencoder {resample['autoencoder']['psnr']:.2f} dB, "
                      f"bicubic {resample['bicubic']['psnr']:.2f} dB")
        '''),
        md(r'''
            The report also saves one grid per size (a row per digit); here are a few of them.
        '''),
        code('''
            from PIL import Image

            if report is not None:
                shown = [r for r in report["sizes"] if (report_dir / r["grid"]).is_file()]
                squares = [r for r in shown if r["height"] == r["width"]]
                others = [r for r in shown if r["height"] != r["width"]]
                picks = squares[:1] + others[:1] + squares[1:][-1:]  # smallest square, a non-square, largest
                if picks:
                    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4), squeeze=False)
                    for ax, r in zip(axes[0], picks):
                        ax.imshow(Image.open(report_dir / r["grid"]), cmap="gray")
                        ax.set_title(f"{r['height']}×{r['width']}: accuracy {r['accuracy']:.0%}")
                        ax.axis("off")
                    plt.show()
        '''),
        md(r'''
            ## Try it: guidance and steps

            `show(cfg, cfg_from, steps, size)` draws all ten digits with one seed. Guidance 0 ignores the label; around
            2–4 the digits are clean; much higher overshoots into thick, saturated strokes. `cfg_from` is the log-SNR
            where guidance starts: the noisier steps before it follow the label alone, which keeps the digits varied
            (the shapes are set there) while the later, guided steps keep them legible; -5 guides every step and the
            digits grow more alike. Very few steps give blurry averages. It is called once with the defaults here
            (saved in the notebook), then wired to sliders.
        '''),
        code('''
            def show(cfg=DEFAULTS.cfg, cfg_from=DEFAULTS.cfg_from, steps=STEPS, size=32, sampler=DEFAULTS.sampler):
                out = pipe.generate(list(range(10)), height=size, width=size, steps=steps, cfg=cfg,
                                    cfg_from=cfg_from, sampler=sampler, seed=SEED)
                show_row(out, height=0.8,
                         suptitle=f"{size}×{size}, guidance {cfg} from log-SNR {cfg_from}, {steps} steps, {sampler}")

            show()
        '''),
        code('''
            try:
                from ipywidgets import Dropdown, FloatSlider, IntSlider, interact_manual
            except ImportError:
                print('ipywidgets is not installed: pip install -e ".[notebooks]" for the sliders')
            else:
                # interact_manual: sampling takes a moment, so it runs when you press the button
                interact_manual(show,
                                cfg=FloatSlider(value=DEFAULTS.cfg, min=0, max=10, step=0.25, description="guidance"),
                                cfg_from=FloatSlider(value=DEFAULTS.cfg_from, min=-5, max=5, step=0.1,
                                                     description="guide from λ"),
                                steps=IntSlider(value=STEPS, min=1, max=100, description="steps"),
                                size=IntSlider(value=32, min=8, max=256, step=8, description="size"),
                                sampler=Dropdown(options=list(SAMPLERS), value=DEFAULTS.sampler,
                                                 description="sampler"));
        '''),
    ]


NOTEBOOKS = {
    "01_coordinates": coordinates,
    "02_training": training,
    "03_latents": latents,
    "04_resolution_invariance": resolution_invariance,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name](), metadata={
        "kernelspec": KERNEL, "language_info": {"name": "python", "pygments_lexer": "ipython3"}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"  # stable ids: regenerating gives no spurious diff
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel with notebooks/ as the working directory; outputs saved in nb."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def with_new_text(name: str) -> nbformat.NotebookNode:
    """The committed notebook with the generator's markdown cells, its code cells and outputs kept: for an
    edit of the prose alone. Refused when any code cell differs (then the notebook must run again)."""
    built = build(name)
    saved = nbformat.read(HERE / f"{name}.ipynb", as_version=4)
    shape = [(c.cell_type, c.source if c.cell_type == "code" else None) for c in built.cells]
    if shape != [(c.cell_type, c.source if c.cell_type == "code" else None) for c in saved.cells]:
        raise SystemExit(f"{name}: the code cells changed; run it again with --execute")
    for new, old in zip(built.cells, saved.cells):
        if new.cell_type == "markdown":
            old.source = new.source
    return saved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to build, by prefix (default: all), e.g. 01 03")
    parser.add_argument("--execute", action="store_true", help="run each notebook and save its outputs")
    parser.add_argument("--fast", action="store_true", help="with --execute: quick mode (RIID_FAST=1)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds allowed per cell (default 1200)")
    parser.add_argument("--text", action="store_true",
                        help="update only the markdown cells of the committed notebooks, keeping their outputs")
    args = parser.parse_args(argv)
    if args.text and args.execute:
        parser.error("--text keeps the saved outputs: it does not go with --execute")
    names = [n for n in NOTEBOOKS if not args.names or any(n.startswith(p) for p in args.names)]
    if not names:
        parser.error(f"no notebook matches {args.names}; choose from {', '.join(NOTEBOOKS)}")
    if args.fast:
        os.environ["RIID_FAST"] = "1"  # the kernel inherits this environment
    else:
        os.environ.pop("RIID_FAST", None)
    for name in names:
        nb = with_new_text(name) if args.text else build(name)
        path = HERE / f"{name}.ipynb"
        if args.execute:
            start = time.time()
            print(f"executing {path.name} …", end=" ", flush=True)
            execute(nb, args.timeout)
            print(f"{time.time() - start:.0f} s")
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    sys.exit(main())
