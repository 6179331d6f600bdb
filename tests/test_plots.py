"""npvae.plots: the tile layout, and every figure written whole as a PNG, with no temp file."""

from __future__ import annotations

import numpy as np
import pytest

from npvae import plots
from npvae.models import VAE, Autoencoder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_only_png(folder, names):
    """``folder`` holds exactly ``names``, each a PNG: no temporary file is left."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 100, name


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


def test_a_failed_save_leaves_neither_file_nor_temporary(vae, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plots.plt.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_manifold(tmp_path / "m.png", vae, n=3)
    assert list(tmp_path.iterdir()) == []
