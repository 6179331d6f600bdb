"""The stochastic encoding: one image encoded several times gives a different z each time.

A VAE's encoder does not give one code but a distribution,
q(z|x) = N(mu, diag(sigma²)), and training draws z from it
(``z = mu + sigma * eps``).  :func:`encode_many` draws ``n`` codes of one
image; :func:`plot_stochastic` draws the image, its posterior mean, the
1-sigma ellipse and the draws in the latent plane (among the other test
images' means), and the decodings of the draws; :func:`describe` says it in
one printed line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

from npvae.app import plots
from npvae.distributions import DiagonalGaussian
from npvae.validate import counted

#: Other test images' means drawn behind the draws, for context.
BACKGROUND_IMAGES = 3000


@dataclass
class Encoding:
    """One image, its posterior and ``n`` draws of z from it."""

    index: int  # which test image
    label: int | None
    image: np.ndarray  # (D,)
    mu: np.ndarray  # (d,)
    sigma: np.ndarray  # (d,) posterior standard deviations
    z: np.ndarray  # (n, d) draws, z = mu + sigma * eps
    dims: tuple[int, int]  # the two dimensions drawn (those with the most KL for this image)


def encode_many(
    model, x: np.ndarray, labels: np.ndarray | None, index: int, n: int, rng: np.random.Generator
) -> Encoding:
    """Encode test image ``x[index]`` (``x (N, D)``) ``n`` times: ``n`` draws from q(z|x)."""
    image = x[index]
    mu, log_var = (row[0] for row in model.encode(image[None]))  # (d,) each
    sigma = np.exp(log_var / 2)
    z = mu + sigma * rng.standard_normal((n, len(mu)), dtype=model.dtype)  # (n, d)
    if len(mu) == 1:
        dims = (0, 0)
    else:
        kl = DiagonalGaussian.kl_per_dim(mu[None], log_var[None])[0]
        first, second = np.argsort(kl)[::-1][:2]
        dims = (int(min(first, second)), int(max(first, second)))
    label = None if labels is None else int(labels[index])
    return Encoding(index, label, image, mu, sigma, z, dims)


def describe(encoding: Encoding, shown: int = 5) -> str:
    """One line: the image, its posterior, and ``shown`` draws' coordinates (in the drawn dims)."""
    i, j = encoding.dims

    def pair(vector):
        return f"({vector[i]:+.2f}, {vector[j]:+.2f})"

    what = f"test image {encoding.index}" + (
        f" (a {encoding.label})" if encoding.label is not None else ""
    )
    draws = " ".join(pair(z) for z in encoding.z[:shown])
    where = "" if len(encoding.mu) == 2 else f" in dimensions z{i + 1}, z{j + 1}"
    return (
        f"stochastic encoding: {what} has posterior mean {pair(encoding.mu)} and standard "
        f"deviation {pair(encoding.sigma)}{where}; encoded {counted(shown, 'time')}, z = {draws}"
    )


def plot_stochastic(
    path,
    model,
    encoding: Encoding,
    background: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """The image, its draws of z in the latent plane, and their decodings, as one PNG.

    ``background (M, d)``: other images' posterior means, drawn faintly where
    they fall inside the view.
    """
    i, j = encoding.dims
    mu, sigma, z = encoding.mu[[i, j]], encoding.sigma[[i, j]], encoding.z[:, [i, j]]
    fig = plt.figure(figsize=(11, 3.9))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 2.2, 2.2], wspace=0.3)

    ax_image = fig.add_subplot(grid[0])
    side = int(round(np.sqrt(len(encoding.image))))
    ax_image.imshow(encoding.image.reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
    ax_image.set_title(f"test image {encoding.index}", fontsize=9)
    ax_image.axis("off")

    ax = fig.add_subplot(grid[1])
    half = max(4 * sigma.max(), np.abs(z - mu).max() * 1.15, 1e-3)
    if background is not None:
        points = background[:, [i, j]].astype(np.float64)
        inside = np.all(np.abs(points - mu) < half, axis=1)
        ax.scatter(*points[inside].T, s=6, color="silver", linewidths=0, label="other images")
    for scale, style in ((1, "-"), (2, ":")):
        ax.add_patch(
            Ellipse(mu, 2 * scale * sigma[0], 2 * scale * sigma[1], fill=False, ls=style, lw=1.2)
        )
    ax.scatter(z[:, 0], z[:, 1], s=22, color="black", marker="o", zorder=3, label="draws of z")
    ax.scatter(*mu, s=90, color="red", marker="+", zorder=4, label="posterior mean")
    ax.set_xlim(mu[0] - half, mu[0] + half)
    ax.set_ylim(mu[1] - half, mu[1] + half)
    ax.set_aspect("equal")
    ax.set_xlabel(f"z{i + 1}")
    ax.set_ylabel(f"z{j + 1}")
    ax.legend(fontsize=7, loc="upper right", markerscale=0.8)
    ax.set_title(
        f"{counted(len(z), 'draw')} from q(z|x); ellipses: 1 and 2 sd\n"
        "(grey: other test images' means)",
        fontsize=9,
    )

    ax_decoded = fig.add_subplot(grid[2])
    decoded = model.decode(encoding.z.astype(model.dtype))
    ax_decoded.imshow(plots.tile(decoded, 5), cmap="gray_r", vmin=0, vmax=1)
    ax_decoded.set_title("each draw decoded", fontsize=9)
    ax_decoded.axis("off")

    caption = "one image encoded several times: a different z each time"
    fig.suptitle(plots.heading(caption, title), fontsize=10, y=1.1)
    return plots.save_figure(fig, path)
