"""Shared test settings: hypothesis profiles and small helpers."""

import os

from hypothesis import HealthCheck, settings

# Gradient checks evaluate a layer hundreds of times per example, so keep the
# example count modest; CI gets the same profile for a stable run time.
settings.register_profile(
    "npvae",
    max_examples=int(os.environ.get("NPVAE_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("npvae")
