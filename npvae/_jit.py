"""The one place numba is configured.

Every compiled function in npvae (all in :mod:`npvae._compiled`) is decorated
with :func:`jit` from here, so that one switch turns numba off everywhere:
``NPVAE_USE_NUMBA=0`` makes ``jit`` return the plain Python function.  The
kernels are written as plain loops, so the same source runs (slowly) as
ordinary Python; the tests run the kernel suite both ways.

The kernels are serial.  numba's parallel loops (``parallel=True``, ``prange``)
make a training step about 2% slower and tie in the evaluation: after each
matrix product OpenBLAS's threads go on spinning for a while, and a parallel
loop's workers must wait for those cores (``benchmarks/README.md``,
"Kernels").  Serial kernels also leave the process's environment alone:
parallel ones need ``OMP_WAIT_POLICY=passive`` set for the whole process,
which slows any other OpenMP library in it.

fastmath: we enable the LLVM flags that let the compiler reassociate and
vectorise floating-point reductions, but deliberately leave out ``nnan`` and
``ninf``: with them LLVM may assume no NaN or infinity ever appears, and a NaN
in the data would then silently turn into a number.  NaN in, NaN out.
"""

from __future__ import annotations

import os

#: ``False`` when the environment says ``NPVAE_USE_NUMBA=0`` (or numba is missing).
USE_NUMBA: bool = os.environ.get("NPVAE_USE_NUMBA", "1").strip().lower() not in {
    "0",
    "false",
    "no",
    "off",
}

#: LLVM fast-math flags: everything but ``nnan`` and ``ninf`` (see module docstring).
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: numba.njit's other options for every kernel.  error_model="numpy": division follows IEEE
#: rules (inf/NaN, as with numba off) instead of raising, which also lets LLVM vectorise loops
#: that divide.  nogil: a kernel releases the GIL, so that the evaluator's threads run kernels
#: side by side (npvae.estimators.importance_sampled's workers).  numba's on-disk cache does
#: not see these options: npvae._compiled.COMPILED_WITH must change with them.
NJIT_OPTIONS: dict = {"error_model": "numpy", "nogil": True}

if USE_NUMBA:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a hard dependency
        USE_NUMBA = False

if USE_NUMBA:

    def jit(func=None, *, fastmath=FASTMATH, cache: bool = True):
        """Compile ``func`` with ``numba.njit`` (nopython mode, serial, cached on disk).

        Usable bare (``@jit``) or with options (``@jit(fastmath=...)``).
        """

        def wrap(f):
            return numba.njit(f, fastmath=set(fastmath), cache=cache, **NJIT_OPTIONS)

        return wrap(func) if func is not None else wrap

else:

    def jit(func=None, *, fastmath=FASTMATH, cache: bool = True):
        """numba is off: return ``func`` unchanged, so it runs as plain Python."""

        def wrap(f):
            return f

        return wrap(func) if func is not None else wrap
