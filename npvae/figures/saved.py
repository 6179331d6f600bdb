"""One figure of a saved run: its test images found as training found them, then drawn.

:func:`open_run` opens a run folder, checkpoint or model file and loads the
test split of the dataset the run trained on (a bare model file takes
``--dataset``, ``--data-dir`` and ``--binarize``), prepared exactly as
training prepared it (``npvae.app.runs``).  :data:`DRAWERS` maps each subcommand
of ``python -m npvae.figures`` to the function that draws it from such a
:class:`Opened` run.

Where a figure goes by default: a run folder's figures go in ``RUN/figures/``,
where training drew its own (:mod:`npvae.app.runfolder`); a model file's go
beside it as ``<file stem>-<name>.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from npvae import estimators
from npvae.app import plots, runfolder, runs
from npvae.app.config import Config, validate
from npvae.errors import ConfigError, DataError
from npvae.figures import stochastic

#: Each subcommand's file name (without ``.png``).
FILE_NAMES = {
    "recon": "reconstructions",
    "samples": "samples",
    "latent": "latent",
    "manifold": "manifold",
    "interpolate": "interpolations",
    "kl": "kl",
    "curves": "curves",
    "encode": "stochastic",
    "filters": "filters",
}


@dataclass
class Opened:
    """A saved run with its test images: what every figure draws from."""

    saved: runs.SavedRun
    x: np.ndarray  # (N, D) test images as the model sees them
    labels: np.ndarray  # (N,)
    title: str  # "VAE 784-400-20 on MNIST, epoch 10 (best)"


def open_run(
    target,
    checkpoint: str = "best",
    dataset: str | None = None,
    data_dir: str | None = None,
    binarize: str | None = None,
    need_data: bool = True,
) -> Opened:
    """Open ``target`` (run folder, checkpoint or model file) and load its test images.

    ``dataset`` and ``binarize`` are for a bare model file, which records
    neither; a run folder uses its own (giving them is a ConfigError).
    ``data_dir`` points either at the dataset's files.  With ``need_data``
    False (the curves), no data is loaded and ``x`` is empty.
    """
    saved = runs.open_saved(target, checkpoint)
    if saved.config is not None:
        if dataset is not None or binarize is not None:
            raise ConfigError(
                "--dataset and --binarize are for a bare model file; "
                f"{target} records the dataset it trained on"
            )
        config = saved.config if data_dir is None else replace(saved.config, data_dir=data_dir)
    else:
        # A model file does not say what it trained on: MNIST unless told, with no
        # fallback to other images (as python -m npvae.evaluate).
        config = validate(
            Config(dataset=dataset or "mnist", data_dir=data_dir, binarize=binarize or "none")
        )
    if not need_data:
        empty = np.empty((0, saved.model.config["input_dim"]), dtype=saved.model.dtype)
        return Opened(saved, empty, np.empty(0, dtype=np.uint8), saved.title())
    if saved.config is not None:
        data = runs.recorded_data(config, saved.record)
        title = saved.title()
    else:
        try:
            data = runs.load_data(config)
        except DataError as err:
            raise DataError(
                f"{target} is a model file, which does not record its data; give --dataset "
                f"(mnist, fashion-mnist or digits) and --data-dir if needed: {err}"
            ) from None
        title = runs.run_title(saved.model, data.name, None)
    x = runs.prepare_images(
        data.x_test, config.binarize, runs.test_binarize_seed(config), saved.model.dtype
    )
    if x.shape[1] != saved.model.config["input_dim"]:
        raise ConfigError(
            f"{target} takes {saved.model.config['input_dim']} pixels, but {data.name}'s "
            f"images have {x.shape[1]}; give the --dataset it was trained on"
        )
    return Opened(saved, x, data.y_test, title)


def default_path(saved: runs.SavedRun, name: str) -> Path:
    """Where subcommand ``name``'s figure goes without ``--out`` (see the module's docstring)."""
    if saved.folder is not None:
        return runfolder.figure_path(saved.folder, FILE_NAMES[name])
    return saved.source.with_name(f"{saved.source.stem}-{FILE_NAMES[name]}.png")


# ----- the drawings --------------------------------------------------------------------------


def _needs(opened: Opened, what: str, name: str) -> None:
    """A ConfigError unless the model has ``what`` ("sample": a VAE or IWAE; "one layer": a
    VAE or IWAE with one stochastic layer; "image" data)."""
    model = opened.saved.model
    if what in ("sample", "one layer") and not hasattr(model, "sample"):
        raise ConfigError(f"{name} needs a VAE or IWAE run; {model.kind} has no prior")
    if what == "one layer" and model.kind == "iwae2":
        raise ConfigError(
            f"{name} needs a VAE or IWAE with one stochastic layer; the two-layer IWAE's z1 has "
            "p(z1|z2) for its prior, not N(0, I), and its z2 is drawn given z1"
        )
    if what == "image" and not plots.is_image_data(model.config["input_dim"]):
        raise ConfigError(f"{name} draws images, and {model.config['input_dim']} is not square")


def draw_recon(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """50 test images and their reconstructions (the denoising AE: with its corrupted inputs)."""
    _needs(opened, "image", "recon")
    model, clean = opened.saved.model, opened.x[:50]
    corrupted = model.corrupt(clean, rng) if hasattr(model, "corrupt") else None
    recon = model.reconstruct(clean if corrupted is None else corrupted)
    return plots.plot_reconstructions(path, clean, recon, title=opened.title, corrupted=corrupted)


def draw_samples(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """100 decoded draws from the prior."""
    _needs(opened, "sample", "samples")
    _needs(opened, "image", "samples")
    return plots.plot_samples(path, opened.saved.model.sample(100, rng), title=opened.title)


def draw_latent(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """The test images' codes (posterior means), by label; projected as ``--projection`` says."""
    model = opened.saved.model
    x, labels = opened.x[: runs.FIGURE_IMAGES], opened.labels[: runs.FIGURE_IMAGES]
    kl_per_dim = None
    if options.projection == "kl":  # the only projection that needs each unit's KL
        if not hasattr(model, "sample"):  # only a Gaussian q(z|x) gives each unit a KL
            raise ConfigError(f"--projection kl needs a VAE or IWAE run; {model.kind} has no KL")
        _needs(opened, "one layer", "--projection kl")
        kl_per_dim, _ = estimators.posterior_summary(model, x)
    codes = model.codes(x)  # (N, d)
    return plots.plot_latent(
        path, codes, labels, title=opened.title, projection=options.projection,
        kl_per_dim=kl_per_dim, kind=model.kind,
    )  # fmt: skip


def draw_manifold(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """The decoder over a 20 × 20 grid of the prior's quantiles (2-d latent spaces only)."""
    _needs(opened, "one layer", "manifold")
    _needs(opened, "image", "manifold")
    model = opened.saved.model
    if model.latent_dim != 2:
        raise ConfigError(
            f"manifold needs a 2-d latent space; this model's has {model.latent_dim} "
            "(train with --latent 2)"
        )
    return plots.plot_manifold(path, model, title=opened.title)


def draw_interpolations(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """Eight straight lines in latent space between random pairs of test images."""
    _needs(opened, "image", "interpolate")
    model, x = opened.saved.model, opened.x
    pairs = rng.choice(len(x), size=(8, 2), replace=len(x) < 16)
    codes = model.codes(x[pairs.ravel()]).reshape(8, 2, -1)  # (8, 2, d)
    t = np.linspace(0, 1, 10, dtype=model.dtype)[None, :, None]  # (1, steps, 1)
    lines = (1 - t) * codes[:, :1] + t * codes[:, 1:]  # (8, steps, d)
    images = model.decode(lines.reshape(80, -1)).reshape(8, 10, -1)
    return plots.plot_interpolations(path, images, title=opened.title)


def draw_kl(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """Each latent dimension's KL on the test set, the active units coloured."""
    _needs(opened, "one layer", "kl")
    kl_per_dim, mean_variance = estimators.posterior_summary(opened.saved.model, opened.x)
    return plots.plot_kl(path, kl_per_dim, mean_variance, title=opened.title)


def draw_curves(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """Loss per epoch from the run's ``metrics.csv``."""
    folder = opened.saved.folder
    if folder is None:
        raise ConfigError(f"curves needs a run folder; {opened.saved.source} is a bare model file")
    rows = runfolder.read_metrics(folder)
    if not rows:
        raise ConfigError(f"{folder} has no epochs yet; train the run for one epoch first")
    unit = plots.loss_unit(opened.saved.model)
    return plots.plot_curves(path, rows, title=opened.title, unit=unit)


def draw_encode(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """One test image encoded ``--draws`` times: the spread of z, and each draw decoded."""
    _needs(opened, "one layer", "encode")
    _needs(opened, "image", "encode")
    if not 0 <= options.index < len(opened.x):
        raise ConfigError(f"--index must be in 0..{len(opened.x) - 1}, got {options.index}")
    model, x, labels = opened.saved.model, opened.x, opened.labels
    encoding = stochastic.encode_many(model, x, labels, options.index, options.draws, rng)
    background = model.encode(x[: stochastic.BACKGROUND_IMAGES])[0]
    written = stochastic.plot_stochastic(path, model, encoding, background, title=opened.title)
    print(stochastic.describe(encoding))
    return written


def draw_filters(opened: Opened, path: Path, rng: np.random.Generator, options) -> Path:
    """The first layer's weights, one tile per unit (the first 100), each scaled to [0, 1]."""
    _needs(opened, "image", "filters")
    return plots.plot_filters(path, plots.filter_tiles(opened.saved.model), title=opened.title)


DRAWERS = {
    "recon": draw_recon,
    "samples": draw_samples,
    "latent": draw_latent,
    "manifold": draw_manifold,
    "interpolate": draw_interpolations,
    "kl": draw_kl,
    "curves": draw_curves,
    "encode": draw_encode,
    "filters": draw_filters,
}
