"""Compile the kernels in a child process, so that a training only loads them.

numba keeps the compiler's working memory in the process that compiles: on
MNIST the first training of a fresh checkout peaked at 325 MB, and every later
run, which loads the kernels' machine code from numba's disk cache, at 289 MB
(``benchmarks/README.md``, "Memory").  :func:`warm` moves the compiling into a
short-lived child when the cache lacks the kernels; the child's memory goes
back to the system when it exits, and the training then loads the code like
any later run.

When the cache already holds the kernels, :func:`warm` costs a few ``stat``
calls.  If anything goes wrong in the child, the training compiles in its own
process, as it always could: this module saves memory and never decides
whether a run can go ahead.

``python -m npvae.app._warm [float32|float64]`` is the child.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from npvae import _compiled, _jit, kernels

#: Generous: the child compiled every kernel from an empty cache in 6.2 s on a 2-core EPYC VM.
CHILD_TIMEOUT_S = 600


def dispatchers() -> list:
    """numba's dispatcher of every compiled function in :mod:`npvae._compiled` (none if off)."""
    if not _jit.USE_NUMBA:
        return []
    import numba

    kinds = numba.core.dispatcher.Dispatcher
    return [obj for obj in vars(_compiled).values() if isinstance(obj, kinds)]


def cached(dtype="float32") -> bool | None:
    """Whether numba's disk cache holds every kernel for ``dtype``, compiled after
    ``_compiled.py`` last changed.

    It looks only at the cache's index files (their existence and age) and at the stamp
    the child leaves beside them once it has compiled ``dtype``'s kernels (:func:`_stamp`),
    never inside them: numba itself checks the rest when it loads, and compiles whatever
    it lacks.  An index file says that some kernel was compiled, not for which dtype, so
    without the stamp a float64 run after float32 ones would compile in its own process.
    None when this numba lays its cache out otherwise and there is no telling.
    """
    source = Path(_compiled.__file__).stat().st_mtime
    folder = None
    for dispatcher in dispatchers():
        try:
            index = _index(dispatcher)
        except AttributeError:
            return None
        if not index.exists() or index.stat().st_mtime < source:
            return False
        folder = index.parent
    if folder is None:
        return True
    stamp = _stamp(folder, dtype)
    return stamp.exists() and stamp.stat().st_mtime >= source


def _index(dispatcher) -> Path:
    """The index file of one kernel in numba's disk cache (AttributeError: another layout)."""
    return Path(dispatcher._cache._cache_file._index_path)  # numba's own layout


def _stamp(folder: Path, dtype) -> Path:
    """The empty file that says a child compiled every kernel for ``dtype`` into ``folder``."""
    return folder / f"npvae-warm-{np.dtype(dtype).name}"


def compiled_here() -> bool:
    """Whether this process has already compiled or loaded a kernel (then its memory is spent)."""
    return any(dispatcher.signatures for dispatcher in dispatchers())


def warm(dtype="float32") -> bool:
    """Fill numba's cache with the kernels for ``dtype`` in a child process, if it lacks them.

    Returns whether a child ran and succeeded.  Nothing to do when numba is off,
    when this process has compiled kernels already, or unless the cache is known
    to lack them (a numba whose cache this cannot read compiles as it always did).
    """
    if not _jit.USE_NUMBA or compiled_here() or cached(dtype) is not False:
        return False
    try:
        done = subprocess.run(
            _child_command(dtype),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CHILD_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _child_command(dtype) -> list[str]:
    return [sys.executable, "-m", "npvae.app._warm", np.dtype(dtype).name]


def compile_kernels(dtype) -> None:
    """Call every public kernel once on tiny arrays of ``dtype``, as the models call them.

    The arrays have the dimensions, layouts and dtypes of the training's calls, so
    that numba compiles (and caches) exactly the versions a training will look up.
    """
    t = np.dtype(dtype).type
    a = np.full((2, 3), 0.5, dtype=t)
    b = np.full((2, 3), -0.25, dtype=t)
    flat = a.reshape(-1).copy()
    kernels.bernoulli_log_prob(a[:1], np.vstack([b, b]))
    kernels.bernoulli_log_prob_and_grad(a[:1], np.vstack([b, b]))
    kernels.gaussian_kl(a, b)
    kernels.gaussian_kl_grad(a, b)
    kernels.reparameterize_backward(a, b, kernels.reparameterize(a, b, a))
    kernels.logsumexp(a)
    kernels.logsumexp(a.astype(np.float64))  # the evaluation's log-mean-exp, in any dtype
    kernels.adam_update(flat, flat.copy(), flat.copy(), flat.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
    kernels.all_finite(flat)
    for forward, backward in ((kernels.tanh, kernels.tanh_backward),
                              (kernels.relu_forward, kernels.relu_backward)):  # fmt: skip
        backward(a, forward(b))
    kernels.sigmoid(a)
    kernels.softplus(a)
    kernels.elu(a)
    kernels.binarize(np.zeros((2, 3), dtype=np.uint8), a)  # a: the uniform noise
    kernels.binarize(b, a)


def main(argv: list[str]) -> int:
    dtype = argv[0] if argv else "float32"
    compile_kernels(dtype)
    try:
        folder = _index(dispatchers()[0]).parent
        _stamp(folder, dtype).touch()
    except (IndexError, AttributeError, OSError):
        pass  # no stamp: the next run starts a child again, and nothing worse
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
