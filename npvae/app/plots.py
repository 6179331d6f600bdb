"""The figures people expect from an autoencoder, written as PNG files.

* ``reconstructions.png``: test images above their reconstructions (for the
  denoising AE: clean, corrupted, reconstruction of the corrupted);
* ``samples.png``: draws from the prior, decoded (generative models);
* ``latent.png``: posterior means (or codes) of test images, coloured by
  label; with more than two dimensions, projected on their first two
  principal components, or on the two dimensions with the most KL;
* ``manifold.png``: for a 2-d latent space, the decoder's output over a grid
  of prior quantiles (Kingma & Welling, 2014, figure 4);
* ``interpolations.png``: each row decodes a straight line in latent space
  between two test images;
* ``kl.png``: each latent dimension's KL(q(z|x) ‖ p(z)) on the test set, the
  active units (Burda et al., 2016) coloured;
* ``curves.png``: training and test loss per epoch, in the model's unit.

Every function takes an optional ``title`` (the run's, such as ``"VAE
784-400-20 on MNIST, epoch 10"``: :func:`npvae.app.runs.run_title`), drawn above
the figure's own caption.  Matplotlib runs headless (Agg).  Every file is
written to a temporary name and renamed, so a figure is either whole or absent.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from npvae._files import atomic_path  # noqa: E402
from npvae.app.runs import FIGURE_IMAGES, TITLES  # noqa: E402
from npvae.estimators import ACTIVE_THRESHOLD, posterior_summary  # noqa: E402
from npvae.validate import counted  # noqa: E402


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


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (its folder made if need be) atomically, and close it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as temporary:
            fig.savefig(temporary, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def heading(caption: str, title: str | None) -> str:
    """The run's title (if any) above the figure's own caption."""
    return f"{title}\n{caption}" if title else caption


def _image_figure(canvas: np.ndarray, title: str, path: Path) -> Path:
    height, width = canvas.shape
    fig, ax = plt.subplots(figsize=(width / 40 + 0.5, height / 40 + 0.7))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return save_figure(fig, path)


def plot_reconstructions(
    path,
    x: np.ndarray,
    recon: np.ndarray,
    n_cols: int = 10,
    title: str | None = None,
    corrupted: np.ndarray | None = None,
) -> Path:
    """Originals ``x (n, D)`` with their reconstructions ``(n, D)`` below each row.

    With ``corrupted (n, D)`` (the denoising AE's inputs), each group of rows is
    clean / corrupted / reconstruction of the corrupted input.
    """
    groups = [x, recon] if corrupted is None else [x, corrupted, recon]
    rows = []
    for start in range(0, len(x), n_cols):
        rows += [group[start : start + n_cols] for group in groups]
    if corrupted is None:
        caption = "test images (odd rows) and their reconstructions"
    else:
        caption = "rows in threes: test image, corrupted input, reconstruction of the corrupted"
    return _image_figure(tile(np.concatenate(rows), n_cols), heading(caption, title), path)


def plot_samples(path, samples: np.ndarray, n_cols: int = 10, title: str | None = None) -> Path:
    """Decoded prior draws ``(n, D)``."""
    caption = "samples from the prior, z ~ N(0, I) (decoder means)"
    return _image_figure(tile(samples, n_cols), heading(caption, title), path)


def filter_tiles(model, units: int = 100) -> np.ndarray:
    """The encoder's first-layer weights as ``(units, D)`` images, each scaled to [0, 1].

    Each unit gets its own range, so a unit with small weights shows its pattern as
    clearly as one with large weights.
    """
    first = next(name for name in model.params if name.endswith(".W"))  # the encoder's first
    weights = model.params[first].astype(np.float64).T[:units]  # (units, D)
    low, high = weights.min(axis=1, keepdims=True), weights.max(axis=1, keepdims=True)
    return (weights - low) / np.maximum(high - low, np.finfo(np.float64).tiny)


def plot_filters(path, tiles: np.ndarray, n_cols: int = 10, title: str | None = None) -> Path:
    """First-layer weights ``(units, D)``, one image a unit, each already scaled to [0, 1]."""
    caption = "first-layer weights, one unit a tile, each scaled to its own range"
    return _image_figure(tile(tiles, n_cols), heading(caption, title), path)


def plot_interpolations(path, rows: np.ndarray, title: str | None = None) -> Path:
    """``rows (r, steps, D)``: each a latent-space line between two test images."""
    r, steps, dim = rows.shape
    caption = "each row: straight line between two test images' posterior means"
    return _image_figure(tile(rows.reshape(r * steps, dim), steps), heading(caption, title), path)


def plot_manifold(path, model, n: int = 20, title: str | None = None) -> Path:
    """Decode a grid of prior quantiles (3% to 97%) of a 2-d latent space, ``n × n`` images."""
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.03, 0.97, n)])
    grid = np.array([[zx, zy] for zy in quantiles[::-1] for zx in quantiles])
    images = model.decode(grid.astype(model.dtype))
    caption = "decoder over a grid of the prior's quantiles (z1 across, z2 up)"
    return _image_figure(tile(images, n), heading(caption, title), path)


def project(
    codes: np.ndarray, projection: str = "pca", kl_per_dim: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[str, str], str]:
    """``codes (N, d)`` as ``(N, 2)`` points, the axis names, and how they were made.

    ``d <= 2`` is drawn as it is (one dimension on a line).  Larger ``d`` is
    projected on the first two principal components (``"pca"``), or on the two
    dimensions with the most KL (``"kl"``, needs ``kl_per_dim (d,)``).
    """
    codes = codes.astype(np.float64)
    if codes.shape[1] == 1:
        return np.column_stack([codes[:, 0], np.zeros(len(codes))]), ("z", ""), ""
    if codes.shape[1] == 2:
        return codes, ("z1", "z2"), ""
    if projection == "kl":
        if kl_per_dim is None:
            raise ValueError("the KL projection needs each dimension's KL")
        first, second = np.argsort(kl_per_dim)[::-1][:2]
        how = f"z{first + 1} and z{second + 1}, the two dimensions with the most KL"
        return codes[:, [first, second]], (f"z{first + 1}", f"z{second + 1}"), how
    if projection != "pca":
        raise ValueError(f"unknown projection {projection!r}")
    centred = codes - codes.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    how = f"projected from {codes.shape[1]} dimensions by PCA"
    return centred @ components[:2].T, ("principal component 1", "principal component 2"), how


def scatter_by_label(ax, points: np.ndarray, labels: np.ndarray | None, size: float = 3) -> None:
    """``points (N, 2)`` on ``ax``, one colour and legend entry per label (tab10)."""
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, color="tab:blue", linewidths=0)
        return
    colours = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for index, label in enumerate(np.unique(labels)):
        chosen = labels == label
        ax.scatter(
            points[chosen, 0], points[chosen, 1], s=size, alpha=0.6, linewidths=0,
            color=colours(index % colours.N), label=str(label),
        )  # fmt: skip


def label_legend(ax, **options) -> None:
    """A legend of the labels, its markers big enough to read the colours."""
    legend = ax.legend(markerscale=12 / 3, handletextpad=0.1, borderpad=0.3, **options)
    for handle in legend.legend_handles:
        handle.set_alpha(1)


def codes_caption(n: int, kind: str | None = None) -> str:
    """What the latent plot shows of ``n`` test images, naming the model of kind ``kind``.

    ``latent codes of 1 test image``, ``... (an IWAE's: posterior means)``; with no
    ``kind``, it says no more than that they are codes.
    """
    shown = f"latent codes of {counted(n, 'test image')}"
    if kind is None:
        return shown
    name = TITLES.get(kind, kind)
    owner = f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}'s"
    if kind == "iwae2":
        return f"{shown} ({owner}: posterior means of z1, then of z2 given them)"
    if kind in ("vae", "iwae"):
        return f"{shown} ({owner}: posterior means)"
    return f"{shown} ({owner}: the encoder's outputs)"


def plot_latent(
    path,
    codes: np.ndarray,
    labels: np.ndarray | None,
    title: str | None = None,
    projection: str = "pca",
    kl_per_dim: np.ndarray | None = None,
    kind: str | None = None,
) -> Path:
    """Scatter ``codes (N, d)``, coloured by ``labels (N,)``; projected to 2-d if ``d > 2``.

    ``projection`` is ``"pca"`` or ``"kl"`` (with ``kl_per_dim (d,)``), see :func:`project`;
    ``kind``, the model's (``model.kind``), is named in the caption (:func:`codes_caption`).
    """
    points, axis_names, how = project(codes, projection, kl_per_dim)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    scatter_by_label(ax, points, labels)
    if labels is not None:
        label_legend(ax, title="label", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    caption = codes_caption(len(codes), kind)
    ax.set_title(heading(caption + (f",\n{how}" if how else ""), title), fontsize=10)
    return save_figure(fig, path)


def loss_unit(model) -> str:
    """The unit of ``model``'s loss: squared error for a squared-error AE, else nats."""
    return "squared error" if model.config.get("reconstruction") == "squared" else "nats"


def plot_curves(path, rows: list[dict], title: str | None = None, unit: str = "nats") -> Path:
    """Loss per epoch from the rows of ``metrics.csv`` (train, and val/test when present).

    ``unit`` names the y-axis: ``"nats"`` (likelihood models, cross-entropy
    AEs) or ``"squared error"`` (:func:`loss_unit`).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [int(row["epoch"]) for row in rows]
    for key in ("train_loss", "val_loss", "test_loss"):
        values = [float(row[key]) if row.get(key) not in (None, "") else np.nan for row in rows]
        if not np.all(np.isnan(values)):
            ax.plot(epochs, values, marker="o", ms=3, label=key.replace("_", " "))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss per example ({unit})")
    ax.set_title(heading("loss per epoch (training: running mean over the epoch)", title),
                 fontsize=10)  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_kl(
    path,
    kl_per_dim: np.ndarray,
    mean_variance: np.ndarray,
    title: str | None = None,
    threshold: float = ACTIVE_THRESHOLD,
) -> Path:
    """Bars of each latent dimension's KL ``(d,)`` (nats), active units coloured.

    A unit is active when the variance of its posterior mean over the test
    set, ``mean_variance (d,)``, exceeds ``threshold`` (Burda et al., 2016).
    """
    d = len(kl_per_dim)
    active = np.asarray(mean_variance) > threshold
    fig, ax = plt.subplots(figsize=(min(12, max(6.5, 3 + 0.3 * d)), 4))
    positions = np.arange(1, d + 1)
    for chosen, style in (
        (active, {"color": "tab:blue", "label": "active"}),
        (~active, {"color": "lightgrey", "edgecolor": "grey", "label": "inactive"}),
    ):
        if chosen.any():
            ax.bar(positions[chosen], kl_per_dim[chosen], **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.3, d + 0.7)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL(q(z_j|x) ‖ N(0, 1)), test mean (nats)")
    caption = (
        f"KL per latent dimension, total {kl_per_dim.sum():.1f} nats\n{active.sum()} of "
        f"{counted(d, 'unit')} active (variance over the test set of the posterior mean "
        f"> {threshold:g})"
    )
    ax.set_title(heading(caption, title), fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def make_figures(
    model,
    x: np.ndarray,
    labels: np.ndarray | None,
    out_dir,
    rng: np.random.Generator,
    title: str | None = None,
    posterior: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Path]:
    """All the figures that suit ``model``, from test data ``x (N, D)``; returns their paths.

    The images shown come from the first :data:`~npvae.app.runs.FIGURE_IMAGES` of ``x``;
    ``labels (N,)`` or None.  ``posterior``: the ``(kl_per_dim (d,), mean_variance (d,))``
    of the KL figure when the caller has them for the whole test set and passes only its
    first images as ``x``; by default :func:`posterior_summary` of ``x``.
    """
    out_dir = Path(out_dir)
    written = []
    generative = hasattr(model, "sample")
    if is_image_data(x.shape[1]):
        clean = x[:50]
        corrupted = model.corrupt(clean, rng) if hasattr(model, "corrupt") else None
        recon = model.reconstruct(clean if corrupted is None else corrupted)
        written.append(
            plot_reconstructions(
                out_dir / "reconstructions.png", clean, recon, title=title, corrupted=corrupted
            )
        )
        if generative:
            written.append(
                plot_samples(out_dir / "samples.png", model.sample(100, rng), title=title)
            )
            pairs = rng.choice(len(x), size=(8, 2), replace=len(x) < 16)
            lines = np.stack([model.interpolate(x[a], x[b], steps=10) for a, b in pairs])
            written.append(plot_interpolations(out_dir / "interpolations.png", lines, title=title))
            if model.latent_dim == 2:
                written.append(plot_manifold(out_dir / "manifold.png", model, title=title))
    subset = slice(0, min(len(x), FIGURE_IMAGES))
    codes = model.codes(x[subset])
    subset_labels = None if labels is None else labels[subset]
    written.append(
        plot_latent(out_dir / "latent.png", codes, subset_labels, title=title, kind=model.kind)
    )
    # The two-layer IWAE's z1 has p(z1|z2) for its prior, not N(0, I): no closed-form KL
    # per unit to draw (its sampled one is in results.json).
    if generative and model.kind != "iwae2":
        if posterior is None:
            posterior = posterior_summary(model, x)
        kl_per_dim, mean_variance = posterior
        written.append(plot_kl(out_dir / "kl.png", kl_per_dim, mean_variance, title=title))
    return written
