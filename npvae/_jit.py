"""The one place numba is configured.

Every compiled kernel in npvae is decorated with :func:`jit` from here, and
parallel loops use :data:`prange` from here, so that one switch turns numba
off everywhere: ``NPVAE_USE_NUMBA=0`` makes ``jit`` return the plain Python
function and ``prange`` become ``range``.  The kernels are written as plain
loops, so the same source runs (slowly) as ordinary Python; the tests run the
kernel suite both ways.

fastmath: we enable the LLVM flags that let the compiler reassociate and
vectorise floating-point reductions, but deliberately leave out ``nnan`` and
``ninf``: with them LLVM may assume no NaN or infinity ever appears, and a NaN
in the data would then silently turn into a number.  NaN in, NaN out.
"""

from __future__ import annotations

import os

# numba's parallel loops run on OpenMP here, whose threads spin while they wait for
# work; beside OpenBLAS's own threads (the matrix products) on a 2-core machine the
# spinning pools stall each other.  Passive waiting costs nothing when idle and keeps
# a kernel at ~1 ms instead of ~10 ms when the other core is busy.  Set before numba
# starts its thread pool; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

#: ``False`` when the environment says ``NPVAE_USE_NUMBA=0`` (or numba is missing).
USE_NUMBA: bool = os.environ.get("NPVAE_USE_NUMBA", "1").strip().lower() not in {
    "0",
    "false",
    "no",
    "off",
}

#: LLVM fast-math flags: everything but ``nnan`` and ``ninf`` (see module docstring).
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

if USE_NUMBA:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a hard dependency
        USE_NUMBA = False

if USE_NUMBA:
    prange = numba.prange

    def jit(func=None, *, parallel: bool = False, fastmath=FASTMATH, cache: bool = True):
        """Compile ``func`` with ``numba.njit`` (nopython mode, cached on disk).

        Usable bare (``@jit``) or with options (``@jit(parallel=True)``).
        """

        def wrap(f):
            # error_model="numpy": division follows IEEE rules (inf/NaN, as with numba off)
            # instead of raising, which also lets LLVM vectorise loops that divide.
            return numba.njit(
                f, parallel=parallel, fastmath=set(fastmath), cache=cache, error_model="numpy"
            )

        return wrap(func) if func is not None else wrap

else:
    prange = range

    def jit(func=None, *, parallel: bool = False, fastmath=FASTMATH, cache: bool = True):
        """numba is off: return ``func`` unchanged, so it runs as plain Python."""

        def wrap(f):
            return f

        return wrap(func) if func is not None else wrap
