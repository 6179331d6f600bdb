"""The one place that decides how many threads the BLAS (the matrix products) uses.

Why it matters: NumPy's OpenBLAS splits a matrix product between its threads,
and each thread waits for the others at the end of every product, spinning.
When another process holds one of the cores, the thread that shares a core with
it runs only in its turns of the scheduler, and the product waits for that
turn: on 2 cores, with other work beside it, a classic VAE step took 156-494 ms
with 2 BLAS threads against 18-36 ms with one (``benchmarks/README.md``,
"Training on a busy machine").  On a quiet machine the second thread makes
the products faster.  So the right number is the number of cores that other
work leaves idle, and that is what ``--threads auto`` (the default) measures:
watching from the start of the run, while the data load, and deciding once,
just before training starts.

Results: a thread count changes how OpenBLAS splits the inner sums of large
products (K = 784 here), so the last bits of a run depend on it.  A run decides
once and keeps its count; give ``--threads N`` for runs that must match bit for
bit across machines and loads (``--resume`` is bit-identical when the count is
the same as the interrupted run's).
"""

from __future__ import annotations

import os
import sys
import time

from npvae.errors import ConfigError
from npvae.validate import counted

#: Seconds that ``auto`` watches the machine at least, before it decides (the kernel
#: counts CPU time in ticks of 10 ms, so this is 15 ticks a core).
SAMPLE_SECONDS = 0.15

#: ``auto`` takes a core as idle when other processes leave this much of it free.  Set
#: on the safe side, as the costs are lopsided: on 2 cores one thread made a quiet step
#: 1.5x slower, two threads beside other work made it 10x slower and more.
IDLE_FRACTION = 0.7


def parse_threads(text, name: str = "--threads") -> int | None:
    """``"auto"`` -> None; ``"2"`` or ``2`` -> 2.  Anything else is a ConfigError naming
    ``name`` (the flag, or the API's argument)."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        count = int(str(text).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{name} must be auto or a whole number of at least 1, got {text!r}")
    return count


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _machine_cpu_seconds() -> tuple[float, float] | None:
    """``(busy, all)`` CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as file:
            ticks = [int(value) for value in file.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    per_second = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / per_second, sum(ticks) / per_second


class CpuWatch:
    """Watches how many cores other processes keep busy, from the moment it is made.

    Made early (before the data are loaded), it has watched long enough by the
    time training starts, and the decision costs no waiting.
    """

    def __init__(self) -> None:
        self._start = self._now()

    @staticmethod
    def _now() -> tuple[tuple[float, float] | None, float, float]:
        return _machine_cpu_seconds(), time.process_time(), time.monotonic()

    def cores_busy_elsewhere(self, at_least: float = SAMPLE_SECONDS) -> float | None:
        """Cores busy with other processes' work since the watch began (None: unknown).

        The machine's busy CPU time less this process's own (all its threads),
        per second of wall time; waits until ``at_least`` seconds have passed.
        None where /proc/stat is not there (not Linux).
        """
        machine, own, wall = self._start
        if machine is None:
            return None
        time.sleep(max(0.0, at_least - (time.monotonic() - wall)))
        machine_now, own_now, wall_now = self._now()
        busy = (machine_now[0] - machine[0]) - (own_now - own)
        return max(0.0, busy / (wall_now - wall))


def choose_threads(
    requested, watch: CpuWatch | None = None, name: str = "--threads"
) -> tuple[int, str]:
    """The thread count for ``requested`` (``"auto"`` or a number), and why, in a few words.

    ``watch``: a :class:`CpuWatch` made earlier; without one, ``auto`` watches for
    :data:`SAMPLE_SECONDS` now.  A number above the usable cores is clamped to them,
    with a one-line note on stderr: threads beyond the cores only wait on each other.
    """
    count = parse_threads(requested, name)
    cores = usable_cores()
    if count is not None:
        if count <= cores:
            return count, "as asked"
        print(
            f"note: {name} {count} is more than the {cores} core{'s' if cores > 1 else ''} "
            f"this process may use; using {cores}",
            file=sys.stderr,
        )
        return cores, f"{count} asked, clamped to the {cores} usable"
    if cores == 1:
        return 1, "auto: 1 core"
    busy = (watch or CpuWatch()).cores_busy_elsewhere()
    if busy is None:
        return cores, f"auto: {counted(cores, 'core')}"
    idle = max(1, min(cores, int(cores - busy + (1 - IDLE_FRACTION))))
    return idle, f"auto: other work is using {busy:.1f} of {counted(cores, 'core')}"


def set_threads(count: int):
    """Limit the BLAS to ``count`` threads, through threadpoolctl, for the process.

    npvae's numba kernels are serial (``npvae._jit``), so the BLAS is the only
    pool of threads there is.  Returns threadpoolctl's limiter, whose
    ``restore_original_limits()`` puts back the limits there were before.
    """
    from threadpoolctl import threadpool_limits

    # Called as a function, not as a with-block, the limit lasts until restored.
    return threadpool_limits(limits=count, user_api="blas")


def use_threads(requested, watch: CpuWatch | None = None) -> tuple[int, str]:
    """Decide (:func:`choose_threads`) and apply (:func:`set_threads`); returns the decision."""
    count, reason = choose_threads(requested, watch)
    set_threads(count)
    return count, reason


class Threads:
    """What :func:`threads` chose: ``count`` and ``reason``; unpacks as ``count, reason``.

    As a context manager, it puts back the BLAS's previous limits when the block ends.
    Chosen by ``"auto"`` with more than one thread, :meth:`tick` after each training
    step keeps the steps on the faster of ``count`` threads and one
    (:class:`npvae.app._tuner.ThreadTuner`), as ``python -m npvae.train`` does.
    """

    def __init__(self, count: int, reason: str, limiter, auto: bool = False) -> None:
        self.count, self.reason, self._limiter = count, reason, limiter
        self._tuner = None
        if auto and count > 1:
            from npvae.app._tuner import ThreadTuner

            self._tuner = ThreadTuner(count)

    def tick(self) -> None:
        """Count one training step (does nothing unless ``"auto"`` chose several threads)."""
        if self._tuner is not None:
            self._tuner.tick()

    def __iter__(self):
        return iter((self.count, self.reason))

    def __int__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"threads: {self.count} ({self.reason})"

    def restore(self) -> None:
        """Put back the limits the BLAS had before :func:`threads` was called."""
        self._limiter.restore_original_limits()

    def __enter__(self) -> Threads:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def threads(requested="auto") -> Threads:
    """Give the BLAS (the matrix products) ``requested`` threads: a number, or ``"auto"``.

    ``"auto"`` takes the cores other work leaves idle, watched for
    :data:`SAMPLE_SECONDS`, as ``--threads auto`` does in the command lines; a
    number above the usable cores is clamped to them, with a note on stderr.
    Importing npvae changes no thread setting; this call is how a script gets
    the command lines' choice::

        npvae.threads("auto")          # for the rest of the process
        with npvae.threads(1):         # for the block, then the previous limits
            ...
        chosen = npvae.threads("auto")
        for x in batches:              # a training loop
            ...
            chosen.tick()              # keeps the steps on the faster of its count and one

    Returns a :class:`Threads`: ``count, reason = npvae.threads("auto")``.  A bad
    value is a :class:`~npvae.errors.ConfigError`.
    """
    count, reason = choose_threads(requested, name="threads")
    return Threads(count, reason, set_threads(count), auto=parse_threads(requested) is None)
