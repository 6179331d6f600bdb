"""The thread tuner keeps a loop on the faster of all its BLAS threads and one.

Its clock and its BLAS are stand-ins here, so each test sets exactly how long
a step takes with each count, as the host's placement of the cores would.
"""

from __future__ import annotations

import pytest

from npvae.app import _tuner
from npvae.app._tuner import ThreadTuner


class FakeBlas:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def set_num_threads(self, count: int) -> None:
        self.calls.append(count)


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_tuner.time, "perf_counter", lambda: now[0])
    return now


def tuner_with(clock, window=4, recheck=3):
    tuner = ThreadTuner(2, window=window, recheck=recheck)
    tuner._blas = [FakeBlas()]
    return tuner


def run(tuner, clock, steps: int, cost: dict[int, float]) -> str:
    """``steps`` steps costing ``cost[count]`` seconds each; the counts used, as a string."""
    used = []
    for _ in range(steps):
        used.append(tuner.current)
        clock[0] += cost[tuner.current]
        tuner.tick()
    return "".join(map(str, used))


def test_it_stays_on_two_threads_while_they_are_faster(clock):
    tuner = tuner_with(clock)
    used = run(tuner, clock, 40, {2: 1.0, 1: 1.6})
    # a warm-up window, one window of each to compare, then two threads throughout
    assert used == "2222" + "2222" + "1111" + "2" * 28
    assert tuner._blas[0].calls == [1, 2]
    assert tuner.share() == pytest.approx(36 / 40)


def test_a_slow_placement_moves_it_to_one_thread_and_it_comes_back(clock):
    tuner = tuner_with(clock)
    run(tuner, clock, 16, {2: 1.0, 1: 1.6})
    slow = run(tuner, clock, 36, {2: 2.2, 1: 1.6})  # two threads now slower than one
    # at once to one thread; every 3 windows one window of two, which loses
    assert slow[:8] == "22221111" and slow.count("2") == 4 + 8
    fast = run(tuner, clock, 28, {2: 1.0, 1: 1.6})  # the placement is back
    assert fast.endswith("2" * 12)


def test_a_window_a_little_slower_is_noise_not_a_reason_to_switch(clock):
    tuner = tuner_with(clock)
    run(tuner, clock, 12, {2: 1.0, 1: 1.6})
    assert run(tuner, clock, 20, {2: 1.7, 1: 1.6}) == "2" * 20  # within MARGIN of one's 1.6


def test_a_pause_between_epochs_is_not_timed(clock):
    tuner = tuner_with(clock)
    run(tuner, clock, 14, {2: 1.0, 1: 1.6})  # two threads chosen, two steps into a window
    clock[0] += 1000.0  # an evaluation
    tuner.restart()
    assert run(tuner, clock, 8, {2: 1.0, 1: 1.6}) == "2" * 8


def test_auto_threads_tick_only_when_there_is_a_choice(monkeypatch):
    import npvae
    from npvae.app import _threads

    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(_threads.CpuWatch, "cores_busy_elsewhere", lambda self, at_least=0: 0.0)
    with npvae.threads("auto") as chosen:
        assert chosen.count == 2 and chosen._tuner is not None
        chosen.tick()
    with npvae.threads(2) as fixed:  # a number is kept: no tuner
        assert fixed._tuner is None
        fixed.tick()
