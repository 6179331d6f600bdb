"""Keep a training loop on whichever is faster now: all its BLAS threads, or one.

Why: on a virtual machine the host may place the two cores a process runs on
so that they share a last-level cache, or so that they do not, and it moves
them between the two placements every few seconds.  When they do not, every
cache line that both BLAS threads touch (the weights both read in a product,
the outputs and gradients each writes half of) crosses between caches at
about 330 ns a round trip instead of 75 ns, and a two-thread step of the
classic VAE runs 1.9-2.2x slower than its usual self: slower than one thread
(``benchmarks/README.md``, "A steady step").  One thread keeps its data in one
cache, and its speed does not depend on the placement.  No setting can be
chosen once for the whole run: the placement changes while it trains.

So :class:`ThreadTuner` times the loop in windows of steps and keeps the
thread count whose latest window was faster.  It times one thread once, at
the start (after a first window that warms up); it switches to one thread the
moment a window with all threads is :data:`MARGIN` slower than one thread's
last, and from one thread it tries all threads again
for one window in every :data:`RECHECK`, so it goes back when the placement
does.  On a placement that stays fast, it costs one window on one thread.

It is used only where the count is npvae's to choose (``--threads auto``,
``npvae.threads("auto")``): a thread count changes the last bits of the
products, so ``--threads N`` stays fixed for runs that must match bit for bit.
"""

from __future__ import annotations

import time

#: Steps timed together: about a quarter of a second of the classic VAE's, long
#: enough for one window's time to stand for the placement, short enough to follow it.
WINDOW = 64

#: All threads are tried again for one window in every this many.
RECHECK = 16

#: All threads are left for one only when their window is this much slower than one
#: thread's last: a single slow window (a collection, another process's burst) is noise.
MARGIN = 1.1


class ThreadTuner:
    """Switches the BLAS between ``most`` threads and one, after every :data:`WINDOW` steps.

    Call :meth:`tick` after each step and :meth:`restart` when the loop pauses
    (an evaluation between epochs), so that a pause is not timed as steps.
    """

    def __init__(self, most: int, window: int = WINDOW, recheck: int = RECHECK) -> None:
        from threadpoolctl import ThreadpoolController

        self.most, self.window, self.recheck = most, window, recheck
        self._blas = ThreadpoolController().select(user_api="blas").lib_controllers
        self.current = most
        self.per_step: dict[int, float] = {}  # the latest window's seconds per step, by count
        self.steps_at: dict[int, int] = {most: 0, 1: 0}  # steps run with each count
        self._since_probe = 0  # windows since the last try of the other count
        self._probing = False
        self._warming = True  # the first window compiles and fills caches: not timed
        self.restart()

    def restart(self) -> None:
        """Begin a new window: time from now."""
        self._steps, self._start = 0, time.perf_counter()

    def tick(self) -> None:
        """Count a step; at a window's end, keep the faster count (see the module's docstring)."""
        self._steps += 1
        self.steps_at[self.current] += 1
        if self._steps < self.window:
            return
        if self._warming:
            self._warming = False
        else:
            self.per_step[self.current] = (time.perf_counter() - self._start) / self._steps
            self._set(self._next())
        self.restart()

    def _next(self) -> int:
        """The count for the next window."""
        one, most = self.per_step.get(1), self.per_step.get(self.most)
        if self._probing:  # the other count has had its window: keep the faster
            self._probing, self._since_probe = False, 0
            return self.most if most < one else 1
        self._since_probe += 1
        if self.current == self.most:
            if one is None:  # not measured yet: one window of it
                self._probing = True
                return 1
            return 1 if most > MARGIN * one else self.most  # slower than one thread: leave now
        if self._since_probe >= self.recheck:  # on one thread: try all again now and then
            self._probing = True
            return self.most
        return 1

    def _set(self, count: int) -> None:
        if count != self.current:
            for blas in self._blas:
                blas.set_num_threads(count)
            self.current = count

    def share(self) -> float:
        """The share of steps so far run with all threads (0 to 1)."""
        total = sum(self.steps_at.values())
        return self.steps_at[self.most] / total if total else 1.0
