"""The templates the embedded digits are drawn from: font glyphs and pen drawings.

:func:`templates` renders, once per process, every digit glyph of the fonts in
:data:`FONT_FILES` (rasterised by matplotlib's FreeType) and :data:`PEN_DRAWINGS`
jittered drawings of each way of writing a digit in :data:`PEN_DIGITS`, drawn
with a round pen, all centred on one ``TEMPLATE_SIDE`` canvas and blurred
slightly.  :mod:`npvae.data.embedded` then distorts one template per image.
The pen jitter comes from a fixed seed, so the templates depend only on the
matplotlib installation.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Template canvas side, and the side of the box the template ink fills:
#: twice the output resolution, so a 20-pixel digit samples a 40-pixel one.
TEMPLATE_SIDE = 64
TEMPLATE_BOX = 40

#: Font files (in matplotlib's ``mpl-data/fonts/ttf``) whose '0'-'9' are digits.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
)

# Pen digits: digit -> ways of writing it -> strokes -> control points (x, y)
# in a unit box, x to the right, y downwards.  A stroke is a smooth curve
# through its points; a sharp corner is where two strokes meet.
# fmt: off
PEN_DIGITS: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [
        [[(0.5, 0.0), (0.15, 0.2), (0.08, 0.55), (0.3, 0.97), (0.7, 0.95),
          (0.9, 0.5), (0.8, 0.12), (0.5, 0.0), (0.35, 0.08)]],
        [[(0.62, 0.04), (0.3, 0.06), (0.1, 0.42), (0.22, 0.88), (0.52, 1.0),
          (0.82, 0.78), (0.88, 0.4), (0.72, 0.1), (0.52, 0.02)]],
    ],
    1: [
        [[(0.55, 0.0), (0.5, 0.5), (0.45, 1.0)]],
        [[(0.25, 0.22), (0.55, 0.0)], [(0.55, 0.0), (0.52, 1.0)]],
        [[(0.3, 0.2), (0.55, 0.0)], [(0.55, 0.0), (0.55, 1.0)], [(0.3, 1.0), (0.8, 1.0)]],
    ],
    2: [
        [[(0.12, 0.25), (0.35, 0.03), (0.68, 0.05), (0.82, 0.3), (0.6, 0.6),
          (0.1, 1.0)], [(0.1, 1.0), (0.9, 0.97)]],
        [[(0.1, 0.2), (0.4, 0.0), (0.75, 0.1), (0.75, 0.4), (0.45, 0.7),
          (0.2, 0.92), (0.15, 0.82), (0.35, 0.82), (0.6, 0.97), (0.92, 0.95)]],
    ],
    3: [
        [[(0.12, 0.12), (0.45, 0.0), (0.78, 0.12), (0.72, 0.38), (0.38, 0.48)],
         [(0.38, 0.48), (0.8, 0.62), (0.82, 0.88), (0.45, 1.0), (0.1, 0.88)]],
        [[(0.15, 0.0), (0.82, 0.0)], [(0.82, 0.0), (0.4, 0.42)],
         [(0.4, 0.42), (0.8, 0.58), (0.85, 0.85), (0.45, 1.0), (0.1, 0.88)]],
    ],
    4: [
        [[(0.6, 0.0), (0.1, 0.66)], [(0.1, 0.66), (0.92, 0.66)],
         [(0.68, 0.3), (0.68, 1.0)]],
        [[(0.15, 0.0), (0.12, 0.6)], [(0.12, 0.6), (0.9, 0.6)],
         [(0.72, 0.0), (0.7, 1.0)]],
    ],
    5: [
        [[(0.85, 0.0), (0.22, 0.0)], [(0.22, 0.0), (0.16, 0.45)],
         [(0.16, 0.45), (0.5, 0.36), (0.85, 0.58), (0.82, 0.88), (0.45, 1.0),
          (0.1, 0.88)]],
        [[(0.25, 0.0), (0.18, 0.45)], [(0.18, 0.45), (0.55, 0.38), (0.85, 0.62),
          (0.75, 0.92), (0.4, 1.0), (0.12, 0.85)], [(0.25, 0.0), (0.85, 0.02)]],
    ],
    6: [
        [[(0.75, 0.0), (0.4, 0.2), (0.15, 0.6), (0.22, 0.93), (0.55, 1.0),
          (0.82, 0.78), (0.65, 0.5), (0.32, 0.52), (0.15, 0.72)]],
        [[(0.6, 0.0), (0.25, 0.35), (0.15, 0.75), (0.45, 1.0), (0.8, 0.8),
          (0.6, 0.55), (0.25, 0.65)]],
    ],
    7: [
        [[(0.1, 0.0), (0.9, 0.0)], [(0.9, 0.0), (0.38, 1.0)]],
        [[(0.1, 0.05), (0.9, 0.0)], [(0.9, 0.0), (0.4, 1.0)], [(0.35, 0.5), (0.85, 0.48)]],
        [[(0.1, 0.08), (0.5, 0.0), (0.9, 0.02)], [(0.9, 0.02), (0.62, 0.42), (0.48, 1.0)]],
    ],
    8: [
        [[(0.5, 0.48), (0.78, 0.25), (0.5, 0.0), (0.22, 0.23), (0.5, 0.48),
          (0.85, 0.74), (0.5, 1.0), (0.15, 0.76), (0.5, 0.48)]],
        [[(0.72, 0.1), (0.45, 0.0), (0.22, 0.2), (0.45, 0.46), (0.8, 0.7),
          (0.55, 1.0), (0.18, 0.78), (0.5, 0.46), (0.75, 0.22), (0.65, 0.05)]],
    ],
    9: [
        [[(0.8, 0.2), (0.5, 0.0), (0.2, 0.15), (0.25, 0.45), (0.6, 0.48),
          (0.8, 0.22)], [(0.8, 0.22), (0.75, 1.0)]],
        [[(0.78, 0.18), (0.45, 0.0), (0.18, 0.2), (0.3, 0.48), (0.7, 0.4),
          (0.78, 0.18)], [(0.78, 0.18), (0.76, 0.65), (0.6, 0.98), (0.25, 0.92)]],
    ],
}
# fmt: on

#: How many jittered drawings of each pen digit become templates.
PEN_DRAWINGS = 6

# Ink points per template used to measure the warped digit's extent.
_N_EXTENT_POINTS = 96


@dataclass(frozen=True)
class Templates:
    """Rendered templates, all on one ``TEMPLATE_SIDE`` canvas.

    images : (K, T, T) float32 in [0, 1], anti-aliased, zero border.
    digits : (K,) int64 label of each template.
    is_pen : (K,) bool, pen-drawn (True) or font glyph (False).
    centres : (K, 2) float64 centre of mass (row, col).
    extent_points : (K, P, 2) float64 ink points (row, col) minus the centre.
    """

    images: np.ndarray
    digits: np.ndarray
    is_pen: np.ndarray
    centres: np.ndarray
    extent_points: np.ndarray


@functools.lru_cache(maxsize=1)
def templates() -> Templates:
    """Render every font glyph and pen drawing onto the template canvas."""
    rng = np.random.default_rng(0)  # jitter of the pen drawings: fixed, part of the design
    images, digits, is_pen = [], [], []
    for font_file in FONT_FILES:
        for digit in range(10):
            ink = _font_glyph(font_file, str(digit))
            if ink is not None:
                images.append(_place(ink))
                digits.append(digit)
                is_pen.append(False)
    for digit, ways in PEN_DIGITS.items():
        for strokes in ways:
            for _ in range(PEN_DRAWINGS):
                images.append(_place(_pen_drawing(strokes, rng)))
                digits.append(digit)
                is_pen.append(True)
    stack = np.stack(images).astype(np.float32)
    stack = _blur(stack)
    rows = np.arange(TEMPLATE_SIDE, dtype=np.float64)
    mass = stack.sum((1, 2), dtype=np.float64)
    centres = np.stack(
        [
            (stack.sum(2) @ rows) / mass,
            (stack.sum(1) @ rows) / mass,
        ],
        -1,
    )
    extent_points = np.stack(
        [_ink_points(image, centre) for image, centre in zip(stack, centres, strict=True)]
    )
    return Templates(
        images=stack,
        digits=np.asarray(digits, dtype=np.int64),
        is_pen=np.asarray(is_pen),
        centres=centres,
        extent_points=extent_points,
    )


def _ink_points(image: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(P, 2) ink pixels spread over the glyph (the extreme ones included), minus centre."""
    rows, cols = np.nonzero(image > 0.2 * image.max())
    points = np.stack([rows, cols], -1).astype(np.float64) - centre
    # Keep the outermost points in many directions: they decide the extent.
    angles = np.linspace(0.0, np.pi, _N_EXTENT_POINTS // 2, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], -1)
    projections = points @ directions.T
    extreme = np.concatenate([projections.argmin(0), projections.argmax(0)])
    return points[extreme]


def _place(ink: np.ndarray) -> np.ndarray:
    """Scale-free placement: centre an ink bitmap (h, w <= TEMPLATE_BOX) on the canvas."""
    canvas = np.zeros((TEMPLATE_SIDE, TEMPLATE_SIDE), dtype=np.float32)
    height, width = ink.shape
    top = (TEMPLATE_SIDE - height) // 2
    left = (TEMPLATE_SIDE - width) // 2
    canvas[top : top + height, left : left + width] = ink
    return canvas


def _blur(stack: np.ndarray) -> np.ndarray:
    """Gaussian blur (sigma 1 template pixel) of (K, T, T): anti-aliasing for the 2:1 warp."""
    offsets = np.arange(-3, 4)
    kernel = np.exp(-0.5 * offsets**2)
    kernel /= kernel.sum()
    side = stack.shape[1]
    blur = np.zeros((side, side), dtype=np.float32)
    for offset, weight in zip(offsets, kernel, strict=True):
        blur += weight * np.eye(side, k=int(offset), dtype=np.float32)
    return blur @ stack @ blur.T


def _crop(bitmap: np.ndarray) -> np.ndarray | None:
    rows = np.flatnonzero(bitmap.any(1))
    cols = np.flatnonzero(bitmap.any(0))
    if len(rows) == 0:
        return None
    return bitmap[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _font_glyph(font_file: str, char: str) -> np.ndarray | None:
    """The glyph of ``char``, cropped to its ink, longer side TEMPLATE_BOX, in [0, 1]."""
    import matplotlib
    from matplotlib.ft2font import FT2Font

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_file
    if not path.is_file():
        return None
    font = FT2Font(str(path))
    size = float(TEMPLATE_BOX)
    ink = None
    for _ in range(3):  # render, measure, re-render at the size that fits
        ink = _rasterise(font, char, size)
        if ink is None:
            return None
        longest = max(ink.shape)
        if TEMPLATE_BOX - 1 <= longest <= TEMPLATE_BOX:
            break
        size *= (TEMPLATE_BOX - 0.5) / longest
    if max(ink.shape) > TEMPLATE_BOX:
        ink = ink[:TEMPLATE_BOX, :TEMPLATE_BOX]
    return ink


def _rasterise(font, char: str, size: float) -> np.ndarray | None:
    try:
        from matplotlib.ft2font import LoadFlags

        no_hinting = LoadFlags.NO_HINTING
    except ImportError:  # matplotlib < 3.10
        from matplotlib.ft2font import LOAD_NO_HINTING as no_hinting
    font.set_size(size, 72)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing glyph is handled below
        font.set_text(char, 0.0, flags=no_hinting)
        font.draw_glyphs_to_bitmap(antialiased=True)
    bitmap = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    return _crop(bitmap)


def _pen_drawing(strokes, rng: np.random.Generator) -> np.ndarray:
    """Draw jittered strokes with a round pen; (h, w) in [0, 1], longer side TEMPLATE_BOX."""
    jitter = 0.035
    curves = []
    for stroke in strokes:
        control = np.asarray(stroke, dtype=np.float64)
        control = control + rng.normal(0.0, jitter, control.shape)
        curves.append(_smooth_curve(control))
    # Strokes that met at a corner should still meet after the jitter.
    for previous, current in zip(curves[:-1], curves[1:], strict=False):
        gap = current[0] - previous[-1]
        if np.hypot(*gap) < 3 * jitter:
            current[0] = previous[-1]
    points = np.concatenate(curves)
    low, high = points.min(0), points.max(0)
    scale = (TEMPLATE_BOX - 8) / max(high - low)
    pen_radius = rng.uniform(2.2, 3.4)
    margin = pen_radius + 1.5
    width = int(np.ceil((high - low)[0] * scale + 2 * margin))
    height = int(np.ceil((high - low)[1] * scale + 2 * margin))
    # Distance from every pixel to the nearest point of the (densely
    # resampled) curves, by splatting a small window around each point.
    path = np.concatenate([_resample((curve - low) * scale + margin, 0.4) for curve in curves])
    reach = int(np.ceil(pen_radius + 1.5))
    offsets = np.arange(-reach, reach + 1)
    window_col, window_row = np.meshgrid(offsets, offsets)
    cols = np.rint(path[:, 0])[:, None].astype(np.int64) + window_col.ravel()
    rows = np.rint(path[:, 1])[:, None].astype(np.int64) + window_row.ravel()
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    distance_sq = (cols - path[:, :1]) ** 2 + (rows - path[:, 1:]) ** 2
    nearest = np.full(height * width, np.inf)
    np.minimum.at(nearest, (rows * width + cols)[inside], distance_sq[inside])
    ink = np.clip(pen_radius + 0.5 - np.sqrt(nearest), 0.0, 1.0).reshape(height, width)
    return ink.astype(np.float32)


def _resample(polyline: np.ndarray, spacing: float) -> np.ndarray:
    """Points along a polyline (M, 2) at most ``spacing`` apart: (M', 2)."""
    lengths = np.hypot(*np.diff(polyline, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    steps = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / spacing)) + 1))
    return np.stack([np.interp(steps, arc, coordinate) for coordinate in polyline.T], -1)


def _smooth_curve(control: np.ndarray, samples_per_span: int = 12) -> np.ndarray:
    """Catmull-Rom curve through the control points (m, 2) -> (M, 2) points."""
    if len(control) == 2:
        t = np.linspace(0.0, 1.0, samples_per_span + 1)[:, None]
        return control[0] + t * (control[1] - control[0])
    # Mirror the end points so the curve starts and ends on them.
    first, last = 2 * control[:1] - control[1:2], 2 * control[-1:] - control[-2:-1]
    padded = np.concatenate([first, control, last])
    t = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    pieces = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        pieces.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                + (3 * p1 - p0 - 3 * p2 + p3) * t3
            )
        )
    pieces.append(control[-1:])
    return np.concatenate(pieces)


__all__ = [
    "FONT_FILES",
    "PEN_DIGITS",
    "PEN_DRAWINGS",
    "TEMPLATE_BOX",
    "TEMPLATE_SIDE",
    "Templates",
    "templates",
]
