"""Shared test settings: hypothesis profiles and small helpers."""

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

from npvae.data import sources
from npvae.errors import NpvaeError

# Gradient checks evaluate a layer hundreds of times per example, so keep the
# example count modest; CI gets the same profile for a stable run time.
settings.register_profile(
    "npvae",
    max_examples=int(os.environ.get("NPVAE_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("npvae")

#: The project's shared copy of the datasets, beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def dataset_folder(name: str) -> Path | None:
    """The folder holding dataset ``name``'s files, found as npvae finds them with no
    download (``$NPVAE_DATA``, the user's cache, the system folder), else in
    :data:`SHARED_DATA`; None if it is in none of them.

    A test that needs the real files uses it, so that a user whose copy is elsewhere
    gets the test run, not skipped: ``NPVAE_DATA=DIR python -m pytest``.
    """
    for data_dir in (None, SHARED_DATA):
        try:
            return sources.find_dataset(name, data_dir, download=False)
        except NpvaeError:  # not there, or $NPVAE_DATA names no folder
            continue
    return None


def where_we_looked(name: str) -> str:
    """A skip reason: where :func:`dataset_folder` looked for ``name``, and what to do."""
    return (
        f"{name} not found in $NPVAE_DATA, {sources.cache_dir(name)}, "
        f"{sources.SYSTEM_DATA_DIR / name} or {SHARED_DATA / name}; "
        f"set NPVAE_DATA to the folder holding it"
    )


#: Real MNIST, if this machine has it (None if not), and the reason a test skips without it.
MNIST_DIR = dataset_folder("mnist")
NO_MNIST = where_we_looked("mnist")
