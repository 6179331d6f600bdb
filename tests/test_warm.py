"""npvae.app._warm: the kernels compiled in a child, so that a training only loads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from npvae import _compiled, _jit, kernels
from npvae.app import _warm

needs_numba = pytest.mark.skipif(
    not _jit.USE_NUMBA, reason="numba is off (NPVAE_USE_NUMBA=0): there is nothing to compile"
)

# One training step of a ReLU VAE and a tanh IWAE, Adam, the NaN guard and the importance-
# sampled log-likelihood, in float32 as `python -m npvae.train` runs them; then the
# kernels that numba had to compile because its cache lacked them.
STEP = """
import json
import numpy as np
from npvae import kernels
from npvae.app import _warm
from npvae.estimators import importance_sampled
from npvae.models import IWAE, VAE
from npvae.optim import Adam

dtype = "{dtype}"
cached = _warm.cached(dtype)
rng = np.random.default_rng(0)
x = (rng.random((8, 784)) < 0.3).astype(dtype)
for model in (VAE(hidden=(16,), latent_dim=4, dtype=dtype),
              IWAE(hidden=(16,), latent_dim=4, activation="tanh", k=3, dtype=dtype)):
    model.loss(x, rng)
    kernels.all_finite(model.flat_grads)
    Adam(model.params).step(model.grads)
    importance_sampled(model, x, rng, n_samples=4, batch_size=4)
compiled = sorted(d.__name__ for d in _warm.dispatchers() if d.stats.cache_misses)
print(json.dumps({{"cached": cached, "compiled": compiled}}))
"""


def run_python(code: str, cache_dir) -> str:
    """Run ``code`` in a new interpreter whose numba cache is ``cache_dir``; its last line."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@needs_numba
def test_after_warm_a_training_compiles_nothing(tmp_path):
    # Without the warm-up, a new cache makes the training compile its kernels itself ...
    cold = json.loads(run_python(STEP.format(dtype="float32"), tmp_path / "cold"))
    assert cold["cached"] is False
    assert {"bernoulli_log_prob_and_grad_loop", "adam_update_loop"} <= set(cold["compiled"])
    # ... and after it, the training finds every kernel in the cache: the compiling, and
    # the memory numba keeps after it, happened in the child.
    warmed = tmp_path / "warmed"
    assert run_python("from npvae.app import _warm; print(_warm.warm())", warmed) == "True"
    assert json.loads(run_python(STEP.format(dtype="float32"), warmed)) == {
        "cached": True,
        "compiled": [],
    }
    # A second warm-up sees the cache full and starts no child.
    assert run_python("from npvae.app import _warm; print(_warm.warm())", warmed) == "False"


@needs_numba
def test_a_float64_run_after_float32_ones_is_warmed_too(tmp_path):
    # numba's index files say a kernel was compiled, not for which dtype: the stamp does.
    cache = tmp_path / "cache"
    assert run_python("from npvae.app import _warm; print(_warm.warm('float32'))", cache) == "True"
    assert (
        run_python("from npvae.app import _warm; print(_warm.cached('float64'))", cache) == "False"
    )
    assert run_python("from npvae.app import _warm; print(_warm.warm('float64'))", cache) == "True"
    assert json.loads(run_python(STEP.format(dtype="float64"), cache)) == {
        "cached": True,
        "compiled": [],
    }
    stamps = sorted(path.name for path in cache.rglob("npvae-warm-*"))
    assert stamps == ["npvae-warm-float32", "npvae-warm-float64"]


@needs_numba
def test_an_edited_compiled_file_makes_the_cache_cold(monkeypatch, tmp_path):
    _warm.main(["float32"])  # the child's work, in this process: the cache holds every kernel
    assert _warm.cached() is True
    newer = tmp_path / "_compiled.py"
    newer.write_text("")
    future = time.time() + 3600
    os.utime(newer, (future, future))
    monkeypatch.setattr(_compiled, "__file__", str(newer))
    assert _warm.cached() is False


def test_nothing_runs_when_numba_is_off_or_has_compiled_here(monkeypatch):
    def no_child(*args, **kwargs):
        raise AssertionError("warm started a child")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(_warm, "cached", lambda dtype: False)
    kernels.relu_forward(np.zeros(3, dtype=np.float32))  # this process has a kernel now
    assert not _warm.warm()
    monkeypatch.setattr(_jit, "USE_NUMBA", False)
    assert _warm.dispatchers() == []
    assert not _warm.warm()


@needs_numba
def test_a_cache_it_cannot_read_starts_no_child(monkeypatch):
    monkeypatch.setattr(_warm, "dispatchers", lambda: [object()])  # no numba cache layout
    monkeypatch.setattr(_warm, "compiled_here", lambda: False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("warm started a child"))
    assert _warm.cached() is None
    assert _warm.warm() is False


@needs_numba
@pytest.mark.parametrize("failure", ["missing interpreter", "failing child", "hung child"])
def test_a_failed_child_only_returns_false(monkeypatch, failure):
    monkeypatch.setattr(_warm, "cached", lambda dtype: False)
    monkeypatch.setattr(_warm, "compiled_here", lambda: False)
    command = {
        "missing interpreter": ["/nonexistent/python"],
        "failing child": ["false"],
        "hung child": ["sleep", "30"],
    }[failure]
    monkeypatch.setattr(_warm, "_child_command", lambda dtype: command)
    monkeypatch.setattr(_warm, "CHILD_TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert _warm.warm() is False
    assert time.monotonic() - started < 10  # a hung child is killed at the timeout
