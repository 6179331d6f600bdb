"""The figures people expect from an autoencoder, written as PNG files.

* ``reconstructions.png``: test images (odd rows) above their reconstructions;
* ``samples.png``: draws from the prior, decoded (generative models);
* ``latent.png``: posterior means (or codes) of test images, coloured by
  label; with more than two dimensions, projected on their first two
  principal components;
* ``manifold.png``: for a 2-d latent space, the decoder's output over a grid
  of prior quantiles (Kingma & Welling, 2014, figure 4);
* ``interpolations.png``: each row decodes a straight line in latent space
  between two test images;
* ``curves.png``: training and validation loss per epoch.

Matplotlib runs headless (Agg).  Every file is written to a temporary name
and renamed, so a figure is either whole or absent.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from npvae._files import atomic_path  # noqa: E402


def tile(images: np.ndarray, n_cols: int, gap: int = 2) -> np.ndarray:
    """Arrange ``images (n, D)`` with square ``D`` in a grid ``n_cols`` wide; returns 2-D.

    Gaps are 0 (paper white, as drawn with the ``gray_r`` colour map).
    """
    n, dim = images.shape
    side = int(round(np.sqrt(dim)))
    n_rows = -(-n // n_cols)
    canvas = np.zeros((n_rows * (side + gap) - gap, n_cols * (side + gap) - gap))
    for i, image in enumerate(images):
        row, col = divmod(i, n_cols)
        top, left = row * (side + gap), col * (side + gap)
        canvas[top : top + side, left : left + side] = image.reshape(side, side)
    return canvas


def is_image_data(dim: int) -> bool:
    """Whether ``dim`` pixels make a square image we can draw."""
    return int(round(np.sqrt(dim))) ** 2 == dim


def _save(fig, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as temporary:
            fig.savefig(temporary, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _image_figure(canvas: np.ndarray, title: str, path: Path) -> Path:
    height, width = canvas.shape
    fig, ax = plt.subplots(figsize=(width / 40 + 0.5, height / 40 + 0.7))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return _save(fig, path)


def plot_reconstructions(path, x: np.ndarray, recon: np.ndarray, n_cols: int = 10) -> Path:
    """Originals ``x (n, D)`` in odd rows, their reconstructions ``(n, D)`` below each."""
    rows = []
    for start in range(0, len(x), n_cols):
        rows += [x[start : start + n_cols], recon[start : start + n_cols]]
    return _image_figure(
        tile(np.concatenate(rows), n_cols), "test images (odd rows) and reconstructions", path
    )


def plot_samples(path, samples: np.ndarray, n_cols: int = 10) -> Path:
    """Decoded prior draws ``(n, D)``."""
    return _image_figure(tile(samples, n_cols), "samples from the prior (decoder means)", path)


def plot_interpolations(path, rows: np.ndarray) -> Path:
    """``rows (r, steps, D)``: each a latent-space line between two test images."""
    r, steps, dim = rows.shape
    return _image_figure(
        tile(rows.reshape(r * steps, dim), steps), "interpolations in latent space", path
    )


def plot_manifold(path, model, n: int = 20) -> Path:
    """Decode a grid of prior quantiles of a 2-d latent space."""
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.03, 0.97, n)])
    grid = np.array([[zx, zy] for zy in quantiles[::-1] for zx in quantiles])
    images = model.decode(grid.astype(model.dtype))
    return _image_figure(tile(images, n), "decoder over a grid of the prior's quantiles", path)


def plot_latent(path, codes: np.ndarray, labels: np.ndarray | None) -> Path:
    """Scatter ``codes (N, d)``, coloured by ``labels (N,)``; PCA to 2-d if ``d > 2``."""
    codes = codes.astype(np.float64)
    if codes.shape[1] == 1:
        codes = np.column_stack([codes[:, 0], np.zeros(len(codes))])
        axis_names = ("z", "")
    elif codes.shape[1] == 2:
        axis_names = ("z1", "z2")
    else:
        centred = codes - codes.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        codes = centred @ components[:2].T
        axis_names = ("principal component 1", "principal component 2")
    fig, ax = plt.subplots(figsize=(6, 5))
    colour, cmap = (labels, "tab10") if labels is not None else ("tab:blue", None)
    points = ax.scatter(codes[:, 0], codes[:, 1], c=colour, cmap=cmap, s=3, alpha=0.7)
    if labels is not None:
        fig.colorbar(points, ax=ax, ticks=np.unique(labels), label="label")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title("latent codes of test images")
    return _save(fig, path)


def plot_curves(path, rows: list[dict]) -> Path:
    """Loss per epoch from the rows of ``metrics.csv`` (train, and val/test when present)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [int(row["epoch"]) for row in rows]
    for key in ("train_loss", "val_loss", "test_loss"):
        values = [float(row[key]) if row.get(key) not in (None, "") else np.nan for row in rows]
        if not np.all(np.isnan(values)):
            ax.plot(epochs, values, marker="o", ms=3, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per example (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def make_figures(
    model, x: np.ndarray, labels: np.ndarray | None, out_dir, rng: np.random.Generator
) -> list[Path]:
    """All the figures that suit ``model``, from test data ``x (N, D)``; returns their paths."""
    out_dir = Path(out_dir)
    written = []
    generative = hasattr(model, "sample")
    if is_image_data(x.shape[1]):
        written.append(
            plot_reconstructions(out_dir / "reconstructions.png", x[:50], model.reconstruct(x[:50]))
        )
        if generative:
            written.append(plot_samples(out_dir / "samples.png", model.sample(100, rng)))
            pairs = rng.choice(len(x), size=(8, 2), replace=len(x) < 16)
            lines = np.stack([model.interpolate(x[a], x[b], steps=10) for a, b in pairs])
            written.append(plot_interpolations(out_dir / "interpolations.png", lines))
            if model.latent_dim == 2:
                written.append(plot_manifold(out_dir / "manifold.png", model))
    subset = slice(0, min(len(x), 5000))
    codes = model.encode(x[subset])
    codes = codes[0] if isinstance(codes, tuple) else codes
    written.append(
        plot_latent(out_dir / "latent.png", codes, None if labels is None else labels[subset])
    )
    return written
