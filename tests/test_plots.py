"""npvae.app.plots: the tile layout, and every figure written whole as a PNG, with no temp file."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.ticker import MaxNLocator

from npvae import estimators
from npvae.app import plots
from npvae.models import VAE, Autoencoder, DenoisingAutoencoder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_only_png(folder, names):
    """``folder`` holds exactly ``names``, each a real, non-blank PNG; no temporary is left."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 100, name
        image = matplotlib.image.imread(folder / name)
        assert image.ndim == 3 and min(image.shape[:2]) >= 40, (name, image.shape)
        assert image[..., :3].std() > 0.01, f"{name} is blank"


@pytest.fixture
def drawn(monkeypatch):
    """The figures ``plots`` makes, kept open for inspection instead of written."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    for fig in figures:
        plots.plt.close(fig)


# ----- tile ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "n_cols", "gap"), [(7, 3, 2), (6, 3, 1), (1, 4, 0), (10, 10, 2)])
def test_tile_places_image_i_at_row_i_div_cols_and_column_i_mod_cols(n, n_cols, gap):
    side = 4
    images = np.random.default_rng(0).random((n, side * side)) + 1.0  # > 0, unlike the gaps
    canvas = plots.tile(images, n_cols, gap=gap)
    n_rows = -(-n // n_cols)
    assert canvas.shape == (n_rows * (side + gap) - gap, n_cols * (side + gap) - gap)
    filled = np.zeros(canvas.shape, dtype=bool)
    for i, image in enumerate(images):
        row, col = divmod(i, n_cols)
        top, left = row * (side + gap), col * (side + gap)
        block = canvas[top : top + side, left : left + side]
        assert np.array_equal(block, image.reshape(side, side)), i
        filled[top : top + side, left : left + side] = True
    assert np.all(canvas[~filled] == 0)  # gaps and empty cells are blank


def test_is_image_data_means_a_square_number_of_pixels():
    assert plots.is_image_data(784) and plots.is_image_data(1)
    assert not plots.is_image_data(783) and not plots.is_image_data(10)


# ----- each figure -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae():
    return VAE(input_dim=16, hidden=[8], latent_dim=2, seed=0)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((30, 16)).astype(np.float32)


def test_plot_reconstructions_samples_and_interpolations(vae, x, tmp_path):
    written = [
        plots.plot_reconstructions(tmp_path / "r.png", x[:13], vae.reconstruct(x[:13]), n_cols=5),
        plots.plot_samples(tmp_path / "s.png", vae.sample(12, np.random.default_rng(0))),
        plots.plot_interpolations(
            tmp_path / "i.png", np.stack([vae.interpolate(x[0], x[1], steps=6)] * 3)
        ),
    ]
    assert written == [tmp_path / "r.png", tmp_path / "s.png", tmp_path / "i.png"]
    assert_only_png(tmp_path, ["r.png", "s.png", "i.png"])


def test_plot_manifold(vae, tmp_path):
    assert plots.plot_manifold(tmp_path / "m.png", vae, n=5) == tmp_path / "m.png"
    assert_only_png(tmp_path, ["m.png"])


@pytest.mark.filterwarnings("error")  # e.g. matplotlib's "cmap will be ignored"
@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_plot_latent_any_dimension_with_or_without_labels(latent_dim, tmp_path):
    codes = np.random.default_rng(latent_dim).standard_normal((40, latent_dim))
    plots.plot_latent(tmp_path / "labelled.png", codes, np.arange(40) % 10)
    plots.plot_latent(tmp_path / "plain.png", codes.astype(np.float32), None)
    assert_only_png(tmp_path, ["labelled.png", "plain.png"])


def test_plot_curves_from_metrics_rows(tmp_path):
    rows = [
        {"epoch": "1", "train_loss": "200.5", "val_loss": "", "test_loss": "199.0"},
        {"epoch": "2", "train_loss": "150.25", "val_loss": "", "test_loss": "151.0"},
    ]
    plots.plot_curves(tmp_path / "curves.png", rows)
    assert_only_png(tmp_path, ["curves.png"])


def test_plot_curves_have_whole_epoch_ticks_and_the_models_unit(drawn, tmp_path):
    rows = [
        {"epoch": str(e), "train_loss": str(100 - e), "test_loss": str(99 - e)} for e in (1, 2, 3)
    ]
    plots.plot_curves(tmp_path / "c.png", rows, title="VAE 16-8-2 on digits, epoch 3")
    squared = Autoencoder(input_dim=16, hidden=[8], code_dim=2, reconstruction="squared")
    plots.plot_curves(tmp_path / "c.png", rows, unit=plots.loss_unit(squared))
    (nats,), (squared_error,) = (fig.axes for fig in drawn)
    assert isinstance(nats.xaxis.get_major_locator(), MaxNLocator)
    ticks = [t for t in nats.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert nats.get_ylabel() == "loss per example (nats)"
    assert nats.get_title().startswith("VAE 16-8-2 on digits, epoch 3\n")
    assert squared_error.get_ylabel() == "loss per example (squared error)"
    assert plots.loss_unit(VAE(input_dim=16, hidden=[8], latent_dim=2)) == "nats"
    assert plots.loss_unit(Autoencoder(input_dim=16, hidden=[8], code_dim=2)) == "nats"


def test_plot_kl_bars_each_dimension_and_colours_the_active_ones(drawn, tmp_path):
    kl = np.array([2.0, 0.001, 1.5, 0.0004])
    variances = np.array([0.8, 0.002, 0.5, 0.0001])
    plots.plot_kl(tmp_path / "kl.png", kl, variances, title="t")
    (ax,) = drawn[0].axes
    heights = {patch.get_x() + patch.get_width() / 2: patch.get_height() for patch in ax.patches}
    assert heights == pytest.approx({1: 2.0, 2: 0.001, 3: 1.5, 4: 0.0004})
    colours = {patch.get_x() + patch.get_width() / 2: patch.get_facecolor() for patch in ax.patches}
    assert colours[1] == colours[3] != colours[2] == colours[4]
    assert "2 of 4 units active" in ax.get_title()


def test_plot_kl_writes_a_real_png(vae, x, tmp_path):
    kl_per_dim, variances = estimators.posterior_summary(vae, x, batch_size=7)
    mu, log_var = vae.encode(x)
    expected = 0.5 * (mu**2 + np.exp(log_var) - 1 - log_var).mean(axis=0)
    np.testing.assert_allclose(kl_per_dim, expected, rtol=1e-5)
    np.testing.assert_allclose(variances, mu.astype(np.float64).var(axis=0), rtol=1e-5)
    plots.plot_kl(tmp_path / "kl.png", kl_per_dim, variances)
    assert_only_png(tmp_path, ["kl.png"])


def test_denoising_reconstructions_show_clean_corrupted_and_reconstruction(x, tmp_path):
    dae = DenoisingAutoencoder(input_dim=16, hidden=[8], code_dim=3, noise="mask", noise_level=0.5)
    corrupted = dae.corrupt(x[:4], np.random.default_rng(0))
    recon = dae.reconstruct(corrupted)
    plots.plot_reconstructions(tmp_path / "r.png", x[:4], recon, n_cols=4, corrupted=corrupted)
    assert_only_png(tmp_path, ["r.png"])
    # Three rows of four 4x4 images: clean, corrupted, reconstruction.
    canvas = plots.tile(np.concatenate([x[:4], corrupted, recon]), 4)
    assert canvas.shape == (3 * 6 - 2, 4 * 6 - 2)


@pytest.mark.parametrize("projection", ["pca", "kl"])
def test_project_says_how_it_projects(projection):
    codes = np.random.default_rng(0).standard_normal((50, 5)) * [1, 5, 0.1, 3, 0.2]
    kl = np.array([0.1, 0.2, 3.0, 0.05, 2.0])
    points, names, how = plots.project(codes, projection, kl)
    assert points.shape == (50, 2)
    if projection == "kl":
        np.testing.assert_array_equal(points, codes[:, [2, 4]])
        assert names == ("z3", "z5") and "the two dimensions with the most KL" in how
    else:
        # The first principal component of these codes is (nearly) dimension 2.
        assert abs(np.corrcoef(points[:, 0], codes[:, 1])[0, 1]) > 0.95
        assert "PCA" in how
    assert plots.project(codes[:, :2], projection, kl)[2] == ""  # 2-d: drawn as it is


def test_plot_latent_titles_its_projection(drawn, tmp_path):
    codes = np.random.default_rng(0).standard_normal((40, 4))
    plots.plot_latent(tmp_path / "l.png", codes, np.arange(40) % 10, projection="kl",
                      kl_per_dim=np.array([0.1, 2.0, 0.3, 1.0]))  # fmt: skip
    (ax,) = drawn[0].axes
    assert "z2 and z4, the two dimensions with the most KL" in ax.get_title()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [str(d) for d in range(10)]


def test_make_figures_writes_what_suits_the_model(vae, x, tmp_path):
    labels = np.arange(len(x)) % 10
    vae_dir, ae_dir = tmp_path / "vae", tmp_path / "ae"
    vae_dir.mkdir()
    ae_dir.mkdir()
    written = plots.make_figures(vae, x, labels, vae_dir, np.random.default_rng(0))
    expected = ["reconstructions.png", "samples.png", "interpolations.png", "manifold.png",
                "latent.png", "kl.png"]  # fmt: skip
    assert sorted(p.name for p in written) == sorted(expected)
    assert_only_png(vae_dir, expected)

    autoencoder = Autoencoder(input_dim=16, hidden=[8], code_dim=3, seed=0)
    written = plots.make_figures(autoencoder, x, None, ae_dir, np.random.default_rng(0))
    assert sorted(p.name for p in written) == ["latent.png", "reconstructions.png"]
    assert_only_png(ae_dir, ["latent.png", "reconstructions.png"])


def test_make_figures_draws_the_kl_summary_it_is_handed(vae, x, tmp_path, monkeypatch):
    # The trainer passes only the first test images, with the KL figure's summary of all.
    given = (np.array([0.5, 2.0]), np.array([0.001, 0.3]))
    drawn_kl = []
    monkeypatch.setattr(plots, "plot_kl", lambda path, kl, var, title=None: drawn_kl.append(
        (kl, var)) or path)  # fmt: skip
    plots.make_figures(vae, x, None, tmp_path, np.random.default_rng(0), posterior=given)
    assert len(drawn_kl) == 1 and all(a is b for a, b in zip(drawn_kl[0], given))
    plots.make_figures(vae, x, None, tmp_path, np.random.default_rng(0))
    np.testing.assert_allclose(drawn_kl[1][0], estimators.posterior_summary(vae, x)[0])


def test_make_figures_titles_every_figure_with_the_run(vae, x, drawn, tmp_path):
    plots.make_figures(vae, x, None, tmp_path, np.random.default_rng(0), title="VAE, epoch 3")
    assert len(drawn) == 6
    for fig in drawn:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles and titles[0].startswith("VAE, epoch 3\n"), titles


def test_a_failed_save_leaves_neither_file_nor_temporary(vae, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plots.plt.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_manifold(tmp_path / "m.png", vae, n=3)
    assert list(tmp_path.iterdir()) == []
