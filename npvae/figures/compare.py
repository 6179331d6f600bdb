"""Three latent spaces side by side: reconstruction only, KL only, and both (the VAE).

The same VAE with a 2-d latent space is trained three times on the same data,
from the same initial weights and batch order, with three objectives
(``docs/models.md#vae``, ``loss = r · recon + beta · KL``):

1. **reconstruction only** (beta = 0): an autoencoder with noise.  Nothing
   holds the codes near the prior, so they spread far beyond it, classes
   apart, with gaps where no image's code lies and nothing decodes to a digit;
2. **KL only** (r = 0): every q(z|x) collapses onto the prior N(0, I), so
   every mean sits at the origin and no class is told apart; the decoder gets
   no gradient at all and its samples are its initial noise;
3. **both**: the VAE: dense clusters close to the prior, and samples from the
   prior that look like digits.

:func:`train_three` trains them; :func:`plot_compare` draws each one's test
latent means coloured by digit, with a row of decoded prior samples under
each; :func:`run` is ``python -m npvae.figures compare``, which also draws the
stochastic encoding of a test image by the third model (``stochastic.png``
beside the comparison).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from npvae._files import check_output
from npvae.app import plots, runs
from npvae.app._threads import CpuWatch, use_threads
from npvae.app.config import Config, validate
from npvae.data import Batches
from npvae.errors import ConfigError
from npvae.figures import stochastic
from npvae.models import VAE
from npvae.optim import Adam
from npvae.validate import counted

#: (name, the VAE settings that make the objective).
OBJECTIVES = (
    ("reconstruction only (β = 0)", {"beta": 0.0}),
    ("KL only (reconstruction weight 0)", {"recon_weight": 0.0}),
    ("both: the VAE", {}),
)

#: Decoded prior samples drawn under each panel.
SAMPLES = 10


@dataclass
class Trained:
    """One of the three models after training, with its test set's latent means."""

    name: str
    model: VAE
    means: np.ndarray  # (N_test, 2) posterior means of the test images
    recon: float  # test reconstruction term (nats per image)
    kl: float  # test KL (nats per image)
    seconds: float

    @property
    def spread(self) -> float:
        """Root mean square distance of the latent means from their centre."""
        return float(np.sqrt(self.means.var(axis=0).sum()))


def train_three(
    x_train: np.ndarray,
    x_test: np.ndarray,
    epochs: int,
    seed: int = 0,
    hidden=(400,),
    lr: float = 1e-3,
    batch_size: int = 128,
    progress=None,
) -> list[Trained]:
    """Train the three objectives on uint8 ``x_train (N, D)``; evaluate on floats ``x_test``.

    Each model starts from the same weights (``seed``) and sees the same
    batches in the same order.  ``progress(name, epoch)``, if given, is
    called after every batch with the model's name and the epoch.
    """
    trained = []
    for name, settings in OBJECTIVES:
        started = time.perf_counter()
        model = VAE(input_dim=x_train.shape[1], hidden=hidden, latent_dim=2, seed=seed, **settings)
        optimizer = Adam(model.params, lr=lr)
        rng = np.random.default_rng(seed)
        batches = Batches(x_train, batch_size, rng, dtype=model.dtype)
        for epoch in range(1, epochs + 1):
            for x in batches:
                model.loss(x, rng)
                optimizer.step(model.grads)
                if progress is not None:
                    progress(name, epoch)
        means = model.codes(x_test)
        report = model.loss(x_test, np.random.default_rng(seed + 1), grad=False)
        seconds = time.perf_counter() - started
        trained.append(Trained(name, model, means, report["recon"], report["kl"], seconds))
    return trained


def plot_compare(
    path, trained: list[Trained], labels: np.ndarray, rng: np.random.Generator, title: str
) -> Path:
    """The three latent spaces, coloured by ``labels (N_test,)``, samples under each.

    Each panel shows at least the prior's ±3 range, with its 1 and 2 sd
    circles, so a collapsed space looks like the point it is.
    """
    fig = plt.figure(figsize=(15, 6.2))
    grid = fig.add_gridspec(2, len(trained), height_ratios=[5, 1.1], hspace=0.3, wspace=0.25)
    z = rng.standard_normal((SAMPLES, 2))  # the same prior draws for every model
    for column, one in enumerate(trained):
        ax = fig.add_subplot(grid[0, column])
        plots.scatter_by_label(ax, one.means, labels, size=3)
        for radius in (1, 2):
            ax.add_patch(plt.Circle((0, 0), radius, fill=False, ls="--", lw=0.9, color="black"))
        half = max(3.2, 1.08 * float(np.percentile(np.abs(one.means), 99.5)))
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_aspect("equal")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2" if column == 0 else "")
        ax.set_title(
            f"{one.name}\nspread of the means {one.spread:.2f}\n"
            f"test: reconstruction {one.recon:.0f} nats, KL {one.kl:.1f} nats",
            fontsize=10,
        )
        if column == len(trained) - 1:
            plots.label_legend(ax, title="digit", loc="center left", bbox_to_anchor=(1.02, 0.5))
        ax_samples = fig.add_subplot(grid[1, column])
        decoded = one.model.decode(z.astype(one.model.dtype))
        ax_samples.imshow(plots.tile(decoded, SAMPLES), cmap="gray_r", vmin=0, vmax=1)
        ax_samples.set_title("decoded samples z ~ N(0, I)", fontsize=9)
        ax_samples.axis("off")
    caption = "test images' latent means, by digit (dashed: the prior's 1 and 2 sd circles)"
    fig.suptitle(plots.heading(caption, title), fontsize=11, y=1.05)
    return plots.save_figure(fig, path)


def run(args, watch: CpuWatch | None = None, written: list | None = None) -> list[Path]:
    """``python -m npvae.figures compare``: train, draw, and demonstrate the stochastic encoding.

    ``watch``: a :class:`~npvae.app._threads.CpuWatch` made before the data load, for
    ``--threads auto``.  Each figure's path is appended to ``written`` as it is
    written, so that a Ctrl-C can say which there are.
    """
    written = [] if written is None else written
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    given = {"data_dir": "--data-dir"} if args.data_dir is not None else None
    config = validate(Config(dataset=args.dataset, data_dir=args.data_dir, seed=args.seed), given)
    if Path(args.out).name == "stochastic.png":
        raise ConfigError(
            f"--out {args.out}: the stochastic encoding is drawn beside the comparison as "
            "stochastic.png; give the comparison another name"
        )
    # Both figures' paths are checked before minutes of training, not after.
    out = check_output(args.out)
    beside = check_output(
        out.with_name("stochastic.png"), "the stochastic encoding's file", "choose another --out"
    )
    data = runs.load_data(config)
    x_test = runs.prepare_images(data.x_test, "none", 0, np.float32)
    print(f"data: {data.summary()}", flush=True)
    threads, why = use_threads(args.threads, watch)
    print(f"threads: {threads} ({why})", flush=True)
    with _Progress(args.epochs, len(data.x_train)) as progress:
        trained = train_three(data.x_train, x_test, args.epochs, args.seed, progress=progress)
    for one in trained:
        print(
            f"{one.name}: {counted(args.epochs, 'epoch')} in {one.seconds:.0f} s; test recon "
            f"{one.recon:.1f} nats, KL {one.kl:.2f} nats; spread of the latent means "
            f"{one.spread:.2f}",
            flush=True,
        )
    dataset = runs.DATASET_TITLES.get(data.name, data.name)
    epochs = counted(args.epochs, "epoch")
    title = f"VAE {runs.architecture(trained[0].model)} on {dataset}, {epochs} each"
    rng = np.random.default_rng(args.seed)
    with _writing(out):
        written.append(plot_compare(out, trained, data.y_test, rng, title))
    print(f"wrote {out}", flush=True)
    both = trained[-1]
    encoding = stochastic.encode_many(both.model, x_test, data.y_test, 0, 20, rng)
    with _writing(beside):
        written.append(
            stochastic.plot_stochastic(
                beside, both.model, encoding,
                both.means[: stochastic.BACKGROUND_IMAGES], title=title,
            )
        )  # fmt: skip
    print(stochastic.describe(encoding))
    print(f"wrote {beside}")
    return written


@contextlib.contextmanager
def _writing(path: Path):
    """An OSError while writing ``path`` (a full disk, a folder made read-only since it was
    checked) as one line naming ``path``, not the temporary beside it."""
    try:
        yield
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from None


class _Progress:
    """A tqdm bar over all three models' batches on a terminal; else a line per model."""

    def __init__(self, epochs: int, n_train: int, batch_size: int = 128) -> None:
        self.total = len(OBJECTIVES) * epochs * -(-n_train // batch_size)
        self.bar, self.current = None, None

    def __enter__(self):
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="training", mininterval=0.5, leave=False)
        return self

    def __call__(self, name: str, epoch: int) -> None:
        if name != self.current:
            self.current = name
            if self.bar is None:
                print(f"training: {name}", flush=True)
        if self.bar is not None:
            self.bar.set_description(f"{name}, epoch {epoch}", refresh=False)
            self.bar.update(1)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
