"""``python -m npvae.figures filters RUN``: the first layer's weights as image tiles."""

from __future__ import annotations

import pytest
from train_support import one_line, train_run, use_tiny_mnist

from npvae.figures.__main__ import main as figures_main
from npvae.models import Autoencoder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return use_tiny_mnist(monkeypatch, tmp_path)


@pytest.mark.parametrize("model", ["denoising-ae", "vae"])
def test_filters_of_a_run_are_drawn_into_its_figures(model, tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--model", model, epochs=1)
    assert figures_main(["filters", str(run)]) == 0
    drawn = run / "figures" / "filters.png"
    assert drawn.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {drawn}" in capsys.readouterr().out


def test_filters_misuse_is_one_line(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--model", "ae", epochs=1)
    assert figures_main(["filters", str(run), "--seed", "2"]) == 2
    assert "filters does not use --seed" in one_line(capsys.readouterr().err)
    flat = Autoencoder(input_dim=10, hidden=(), code_dim=2).save(tmp_path / "flat.npz")
    assert figures_main(["filters", str(flat)]) == 2
    assert one_line(capsys.readouterr().err) == "error: filters draws images, and 10 is not square"
    assert not list(tmp_path.glob("flat-*.png"))
