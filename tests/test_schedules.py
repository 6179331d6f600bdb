"""Tests for npvae.schedules: each schedule's values, the IWAE paper's stages, repr and
the factory."""

import pytest

from npvae.errors import ConfigError
from npvae.schedules import (
    ConstantLR,
    ExponentialLR,
    FittedIWAESchedule,
    IWAESchedule,
    StepLR,
    make_schedule,
)


def test_constant_step_and_exponential_values():
    constant = ConstantLR(0.01)
    assert [constant(e) for e in (0, 1, 1000)] == [0.01, 0.01, 0.01]
    step = StepLR(0.1, step_size=10, gamma=0.5)
    assert step(0) == step(9) == 0.1
    assert step(10) == pytest.approx(0.05)
    assert step(25) == pytest.approx(0.025)
    exponential = ExponentialLR(0.1, gamma=0.9)
    assert exponential(0) == 0.1
    assert exponential(1) == pytest.approx(0.09)
    assert exponential(5) == pytest.approx(0.1 * 0.9**5)


IWAE_STAGE_OF_EPOCH = {
    0: 0,
    1: 1,
    3: 1,
    4: 2,
    12: 2,
    13: 3,
    39: 3,
    40: 4,
    120: 4,
    121: 5,
    363: 5,
    364: 6,
    1092: 6,
    1093: 7,
    3279: 7,
    3280: 7,
    100_000: 7,
}


@pytest.mark.parametrize(("epoch", "stage"), IWAE_STAGE_OF_EPOCH.items())
def test_iwae_schedule_stage_boundaries(epoch, stage):
    schedule = IWAESchedule(1e-3)
    assert schedule(epoch) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-14)


def test_iwae_schedule_stage_lengths_and_total():
    schedule = IWAESchedule(1e-3, stages=8)
    assert schedule.total_epochs == 3280
    rates = [schedule(epoch) for epoch in range(schedule.total_epochs)]
    distinct = sorted(set(rates), reverse=True)
    assert len(distinct) == 8
    assert [rates.count(rate) for rate in distinct] == [3**i for i in range(8)]
    assert distinct[-1] / distinct[0] == pytest.approx(10 ** (-7 / 7))
    assert IWAESchedule(1e-3, stages=3).total_epochs == 1 + 3 + 9


def test_fitted_iwae_schedule_with_the_papers_epochs_is_the_paper_schedule():
    paper, fitted = IWAESchedule(1e-3), FittedIWAESchedule(1e-3, epochs=3280)
    assert [fitted(epoch) for epoch in range(3400)] == [paper(epoch) for epoch in range(3400)]


@pytest.mark.parametrize("epochs", [820, 1000, 37])
def test_fitted_iwae_schedule_keeps_the_stages_proportions(epochs):
    schedule = FittedIWAESchedule(1e-3, epochs=epochs)
    rates = [schedule(epoch) for epoch in range(epochs)]
    assert rates[0] == 1e-3
    assert rates == sorted(rates, reverse=True)
    assert schedule(epochs - 1) == schedule(10 * epochs) == pytest.approx(1e-4, rel=1e-14)
    # Stage i starts at the paper's epoch (3**i - 1) / 2, scaled by epochs / 3280: each
    # epoch's stage is the last one that has started by the epoch's beginning.
    for epoch, rate in enumerate(rates):
        started = [i for i in range(8) if epoch * 3280 >= (3**i - 1) // 2 * epochs]
        assert rate == pytest.approx(1e-3 * 10 ** (-started[-1] / 7), rel=1e-14)


def test_fitted_iwae_schedule_for_820_epochs():
    schedule = FittedIWAESchedule(1e-3, epochs=820)
    rates = [schedule(epoch) for epoch in range(820)]
    counts = [rates.count(1e-3 * 10 ** (-stage / 7)) for stage in range(8)]
    assert counts == [1, 0, 3, 6, 21, 60, 183, 546]


def test_iwae_fit_schedule_is_built_from_the_runs_epochs():
    from npvae.app.build import schedule_for
    from npvae.app.config import Config

    schedule = schedule_for(Config(schedule="iwae-fit", epochs=820, lr=2e-3))
    assert isinstance(schedule, FittedIWAESchedule)
    assert (schedule.epochs, schedule(0), schedule(819)) == (820, 2e-3, pytest.approx(2e-4))


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantLR(0.01),
        StepLR(0.1, 10, 0.5),
        ExponentialLR(0.1, 0.9),
        IWAESchedule(1e-3, 4),
        IWAESchedule(1e-3, 4, epochs=11),
        FittedIWAESchedule(1e-3, epochs=100),
    ],
)
def test_schedule_repr_rebuilds_the_same_schedule(schedule):
    rebuilt = eval(repr(schedule))  # noqa: S307 - repr of our own classes, under test
    assert type(rebuilt) is type(schedule)
    for epoch in (0, 1, 5, 13, 50):
        assert rebuilt(epoch) == schedule(epoch)


def test_schedule_rejects_negative_epoch():
    with pytest.raises(ValueError, match="0-based"):
        ConstantLR(0.1)(-1)


def test_make_schedule_builds_each_schedule():
    assert make_schedule("constant", 0.1)(7) == 0.1
    assert make_schedule("step", 0.1, step_size=2, gamma=0.1)(2) == pytest.approx(0.01)
    assert make_schedule("exponential", 0.1, gamma=0.5)(1) == pytest.approx(0.05)
    assert make_schedule("iwae", 1e-3).total_epochs == 3280


def test_unknown_name_raises_config_error_listing_valid_names():
    with pytest.raises(ConfigError) as raised:
        make_schedule("cosine", 0.1)
    message = str(raised.value)
    assert "\n" not in message
    for name in ["constant", "step", "exponential", "iwae"]:
        assert repr(name) in message


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_schedule("step", 0.1, gamma=0.5),
        lambda: StepLR(0.1, step_size=0, gamma=0.5),
        lambda: IWAESchedule(1e-3, stages=2.5),
    ],
)
def test_bad_options_raise_config_error(build):
    with pytest.raises(ConfigError) as raised:
        build()
    assert "\n" not in str(raised.value)
