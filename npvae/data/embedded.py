"""An embedded dataset of handwritten-like digits: no file, no network.

:func:`make_digits` draws 28x28 uint8 images of the digits 0-9, with labels,
deterministically from a seed.  Each image starts from one of a few hundred
*templates*, rendered once per process by :mod:`npvae.data.glyphs`:

- the digit glyphs of the fonts matplotlib ships (DejaVu Sans, Sans Mono and
  Serif in four styles each, STIX General in four, and six Computer Modern
  faces), rasterised by matplotlib's FreeType; and
- digits drawn with a round pen along hand-designed strokes (:data:`PEN_DIGITS`,
  several ways of writing each digit: a 1 with and without a flag, an open
  and a closed 4, a 7 with and without a bar...), each drawn a few times with
  jittered control points and pen widths.

Each image is then one random draw of a distortion of its template, the way a
hand varies: a random affine map (rotation, slant, aspect, size), a smooth
random elastic displacement field (Simard et al., 2003), stroke width
(grey-level dilation or erosion) and contrast.  Then it is normalised like
MNIST (LeCun et al., 1998): the longer side of the digit's box is about 20
pixels (the box of its darker ink is drawn from 18-19.5; the grey edges add
the rest) and its centre of mass sits at the centre of the 28x28 field.

Everything per image is vectorised over blocks of images; there is no
per-pixel Python loop: 20,000 + 4,000 images take about 2.5 s on a 2-core
machine, plus 0.5 s to render the templates the first time in a process.

How good is it?  A 1-nearest-neighbour classifier fitted on 10,000 of these
and tested on 2,000 more is right 96% of the time (on MNIST, 92%), with a
similar mean distance to the nearest training image (4.7 against 4.8), so
the classes are distinct and vary about as much within themselves as MNIST's;
fitted on these and tested on real MNIST it is right 74% of the time.

The pixels depend on matplotlib's FreeType build only through the font
templates, so a given seed gives the same images on a given installation.
"""

from __future__ import annotations

import functools

import numpy as np

from npvae.data import glyphs
from npvae.data.glyphs import FONT_FILES, PEN_DIGITS
from npvae.errors import ConfigError

#: Output image side, and the side of the box the digit is scaled into.
IMAGE_SIDE = 28
BOX_SIDE = 20.0

#: The field centre that the digit's centre of mass is moved to (row, col),
#: where MNIST's centres of mass sit on average.
CENTRE = (14.0, 14.0)

#: Share of images drawn from pen templates (the rest from font glyphs), by
#: digit.  Most fonts give their 1 a base serif that few writers draw.
PEN_SHARE = (0.6, 0.85, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6)

# Images are made in blocks of this many: each block draws its random numbers at once,
# so the block size is part of what a seed means and stays.
_BLOCK = 2048
# A block's pixels are worked this many images at a time, which bounds the temporaries:
# all 2,048 at once hold 136 MB (tracemalloc), more than the training that follows needs.
_CHUNK = 256


def make_digits(
    n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate train and test images of handwritten-like digits.

    Parameters
    ----------
    n_train, n_test : int
        Number of images in each split (>= 0).  Labels are balanced: each
        digit appears ``n // 10`` or ``n // 10 + 1`` times, in random order.
    seed : int
        The train and test splits are drawn from two independent streams
        spawned from this seed; the same seed gives the same arrays.

    Returns
    -------
    x_train : np.ndarray
        (n_train, 28, 28) uint8, 0 = background, up to 255 = ink.
    y_train : np.ndarray
        (n_train,) uint8 labels 0-9.
    x_test : np.ndarray
        (n_test, 28, 28) uint8.
    y_test : np.ndarray
        (n_test,) uint8.

    Raises
    ------
    ConfigError
        If a size is negative.
    """
    for label, size in (("n_train", n_train), ("n_test", n_test)):
        if size < 0:
            raise ConfigError(f"{label} must be at least 0, got {size}")
    train_stream, test_stream = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train = _draw_split(n_train, np.random.default_rng(train_stream))
    x_test, y_test = _draw_split(n_test, np.random.default_rng(test_stream))
    return x_train, y_train, x_test, y_test


def _draw_split(n_images: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    templates = glyphs.templates()
    labels = rng.permutation(np.arange(n_images) % 10).astype(np.uint8)
    template_index = _choose_templates(labels, templates, rng)
    images = np.empty((n_images, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for start in range(0, n_images, _BLOCK):
        stop = min(start + _BLOCK, n_images)
        images[start:stop] = _render_block(templates, template_index[start:stop], rng)
    return images, labels


def _choose_templates(
    labels: np.ndarray, templates: glyphs.Templates, rng: np.random.Generator
) -> np.ndarray:
    """(n,) template index for each label: a pen or font template of that digit."""
    use_pen = rng.random(len(labels)) < np.asarray(PEN_SHARE)[labels]
    uniform = rng.random(len(labels))
    chosen = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):
        for pen in (False, True):
            pool = np.flatnonzero((templates.digits == digit) & (templates.is_pen == pen))
            rows = (labels == digit) & (use_pen == pen)
            chosen[rows] = pool[(uniform[rows] * len(pool)).astype(np.int64)]
    return chosen


# --------------------------------------------------------------------------
# Distortion: one block of images.


def _render_block(
    templates: glyphs.Templates, template_index: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Warp, thicken or thin, and normalise one block of images.

    Every random number of the block is drawn first, in a fixed order that is part of
    what a seed means; the pixels are then worked :data:`_CHUNK` images at a time, so
    the chunk size changes no image.  Returns (n, 28, 28) uint8.
    """
    n_images = len(template_index)
    # Linear part of the template -> image map, in (row, col) coordinates.
    angle = rng.normal(0.0, np.deg2rad(9.0), n_images)
    slant = rng.normal(0.12, 0.18, n_images)
    log_aspect = rng.normal(0.0, 0.12, n_images)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    # Slant moves the top of the digit right: col -= slant * row.
    shear = np.zeros((n_images, 2, 2))
    shear[:, 0, 0] = 1.0
    shear[:, 1, 1] = 1.0
    shear[:, 1, 0] = -slant
    aspect = np.zeros((n_images, 2, 2))
    aspect[:, 0, 0] = np.exp(-0.5 * log_aspect)
    aspect[:, 1, 1] = np.exp(0.5 * log_aspect)
    linear = shear @ rotation @ aspect

    # Scale so the warped ink's longer side fits the MNIST box.
    points = templates.extent_points[template_index] @ np.swapaxes(linear, 1, 2)
    extent = np.maximum(np.ptp(points[..., 0], axis=1), np.ptp(points[..., 1], axis=1))
    box = rng.uniform(BOX_SIDE - 2.0, BOX_SIDE - 0.5, n_images)
    linear *= (box / np.maximum(extent, 1e-6))[:, None, None]
    inverse = np.linalg.inv(linear).astype(np.float32)

    # The rest of the block's random numbers: the elastic field's coarse grid, a shift,
    # the stroke's thickening or thinning, and the contrast stretch's two levels.
    coarse = _coarse_displacements(n_images, rng)
    shift = rng.normal(0.0, 0.15, (n_images, 2)).astype(np.float32)
    amount = rng.uniform(-0.7, 0.5, (n_images, 1, 1)).astype(np.float32)
    low = rng.uniform(0.08, 0.22, (n_images, 1, 1)).astype(np.float32)
    high = low + rng.uniform(0.35, 0.6, (n_images, 1, 1)).astype(np.float32)

    images = np.empty((n_images, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for start in range(0, n_images, _CHUNK):
        part = slice(start, start + _CHUNK)
        warped = _warp(templates, template_index[part], inverse[part], shift[part], coarse[part])
        images[part] = _to_uint8(_vary_stroke(warped, amount[part]), low[part], high[part])
    return images


def _warp(
    templates: glyphs.Templates,
    template_index: np.ndarray,
    inverse: np.ndarray,
    shift: np.ndarray,
    coarse: np.ndarray,
) -> np.ndarray:
    """Sample each template through its inverse map: (n,) indices, (n, 2, 2), (n, 2) and
    (n, 2, 5, 5) in, (n, 28, 28) grey levels out.

    The output grid, displaced by a smooth random field, is mapped into the template:
    ``source = inverse @ (pixel - centre - shift + field) + template centre``.
    """
    field_row, field_col = _elastic_field(coarse)
    pixel = np.arange(IMAGE_SIDE, dtype=np.float32)
    row = (pixel - np.float32(CENTRE[0]))[None, :, None] - shift[:, 0, None, None] + field_row
    col = (pixel - np.float32(CENTRE[1]))[None, None, :] - shift[:, 1, None, None] + field_col
    inverse = inverse[..., None, None]
    centres = templates.centres[template_index].astype(np.float32)[..., None, None]
    source_row = inverse[:, 0, 0] * row + inverse[:, 0, 1] * col + centres[:, 0]
    source_col = inverse[:, 1, 0] * row + inverse[:, 1, 1] * col + centres[:, 1]
    return _bilinear(templates.images, template_index, source_row, source_col)


def _coarse_displacements(n_images: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2, 5, 5) normal draws on a coarse grid, each image's scaled by its own strength."""
    strength = rng.uniform(0.4, 1.4, (n_images, 1, 1, 1))
    return rng.normal(0.0, 1.0, (n_images, 2, 5, 5)) * strength


def _elastic_field(coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth displacements (row, col), each (n, 28, 28) float32, ~1 pixel.

    The coarse draws ``(n, 2, 5, 5)``, interpolated to 28x28 by two matrix
    products, give a field that bends strokes without breaking them.
    """
    interpolate = _interpolation_matrix(IMAGE_SIDE, coarse.shape[-1])
    field = (interpolate @ coarse.astype(np.float32) @ interpolate.T).astype(np.float32)
    return field[:, 0], field[:, 1]


@functools.lru_cache(maxsize=4)
def _interpolation_matrix(n_fine: int, n_coarse: int) -> np.ndarray:
    """(n_fine, n_coarse) linear interpolation weights from a coarse to a fine grid."""
    position = np.linspace(0.0, n_coarse - 1, n_fine)
    below = np.minimum(np.floor(position).astype(np.int64), n_coarse - 2)
    frac = position - below
    weights = np.zeros((n_fine, n_coarse))
    weights[np.arange(n_fine), below] = 1.0 - frac
    weights[np.arange(n_fine), below + 1] = frac
    return weights.astype(np.float32)


def _bilinear(
    images: np.ndarray, image_index: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Sample ``images[image_index[n]]`` at ``(rows[n], cols[n])`` bilinearly.

    images : (K, T, T) float32; image_index : (n,); rows, cols : (n, H, W)
    float32.  Points outside the canvas read its zero border.  Returns
    (n, H, W) float64: the fractions (float32 less int32) promote, and the images a
    seed gives depend on that arithmetic, so it stays.
    """
    side = images.shape[1]
    rows = np.clip(rows, 0.0, side - 1.001)
    cols = np.clip(cols, 0.0, side - 1.001)
    top, left = rows.astype(np.int32), cols.astype(np.int32)  # floor: both are >= 0
    frac_row, frac_col = rows - top, cols - left
    flat = images.reshape(-1)
    base = (image_index.astype(np.int32) * (side * side))[:, None, None] + top * side + left
    upper = flat[base]
    upper += (flat[base + 1] - upper) * frac_col
    lower = flat[base + side]
    lower += (flat[base + side + 1] - lower) * frac_col
    return upper + (lower - upper) * frac_row


def _vary_stroke(images: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicken or thin strokes by a random fraction of a grey-level dilation / erosion.

    images : (n, 28, 28) in [0, 1]; amount : (n, 1, 1) in [-0.7, 0.5), the
    fraction of the erosion (below 0) or dilation (above) to take; returns the same shape.
    """
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    # The 4-neighbourhood (a plus sign) thickens by one pixel without squaring corners.
    neighbours = (
        padded[:, :-2, 1:-1],
        padded[:, 2:, 1:-1],
        padded[:, 1:-1, :-2],
        padded[:, 1:-1, 2:],
    )
    dilated, eroded = images.copy(), images.copy()
    for neighbour in neighbours:
        np.maximum(dilated, neighbour, out=dilated)
        np.minimum(eroded, neighbour, out=eroded)
    thicker = np.maximum(amount, 0)
    thinner = np.maximum(-amount, 0)
    return images + thicker * (dilated - images) + thinner * (eroded - images)


def _to_uint8(images: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Stretch contrast so stroke cores saturate and edges stay grey, like MNIST.

    images : (n, 28, 28); low, high : (n, 1, 1), the levels that map to 0 and 255 once
    each image is scaled to its own maximum.
    """
    peak = images.reshape(len(images), -1).max(1)[:, None, None]
    normalised = images / np.maximum(peak, 1e-6)
    stretched = np.clip((normalised - low) / (high - low), 0.0, 1.0)
    return np.rint(stretched * 255).astype(np.uint8)


__all__ = ["BOX_SIDE", "CENTRE", "FONT_FILES", "IMAGE_SIDE", "PEN_DIGITS", "make_digits"]
