"""Keep a training step's freed memory for the next step: glibc's malloc, set once per process.

A training step allocates the same large temporaries every time and frees them
by its end.  At the IWAE's k = 5 and batch 100 the decoder's outputs, their
gradients and the likelihood's are 500 x 784 float32, 1.6 MB each.  glibc's
malloc serves a block above its mmap threshold with a fresh mapping, and hands
free memory at the top of its heap back to the OS once there is more than its
trim threshold.  It moves both thresholds as blocks come and go, so what a step
costs depends on what the process freed before it.  A process that has freed a
few-MB array (npvae's data loading does) gets high thresholds and keeps its
memory.  One that has not serves each 1.6 MB array with a fresh mapping, and the
next step touches the memory again page by page.  On the 2-core AMD VM such a
script's IWAE k = 5 step took about 1,080 minor page faults and 10.5-13.3 ms, and
with the thresholds fixed none and 7.7-9.8 ms.  The trainer and the PyTorch
comparison's worker had settled high already: fixed, they ran no faster
(``benchmarks/README.md``, "Memory handed back between steps").

So npvae fixes the thresholds when it is first imported: blocks up to 32 MB
(:data:`MMAP_THRESHOLD`; an IWAE k = 50 batch's arrays are 15.7 MB) come from the
heap, and up to 64 MB (:data:`TRIM_THRESHOLD`) of free memory stays at its top,
ready for the next step.  Memory in use is never more than before; what changes is
that freed memory is kept, not returned.  The peak resident memory of the classic
MNIST training rose by 3 MB, 1% (the same README section).

Only glibc has ``mallopt`` with these options: on macOS, Windows or musl this
does nothing.  The user's own choice wins: glibc's environment variables
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` or its
``GLIBC_TUNABLES`` malloc settings, or ``NPVAE_MALLOPT=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: ``mallopt`` parameter numbers, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap, not from a mapping of their own.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap up to this size is kept for reuse.
TRIM_THRESHOLD = 64 << 20

#: Environment settings with which the user has already chosen (or refused) a tuning.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _user_chose() -> bool:
    if os.environ.get("NPVAE_MALLOPT", "1").strip().lower() in {"0", "false", "no", "off"}:
        return True
    if any(name in os.environ for name in _USER_SETTINGS):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring).

    Returns True if it set them, False if the C library is not glibc or the user
    has chosen otherwise.  Calling it again sets the same values again.
    """
    if not sys.platform.startswith("linux") or _user_chose():
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no such options
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.  Setting either turns off glibc's moving thresholds.
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and (
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
