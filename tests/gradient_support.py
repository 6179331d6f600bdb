"""Helpers for the models' gradient tests: every parameter's error, and the bar it must pass."""

from __future__ import annotations

from npvae.gradcheck import TOLERANCE, check_gradients


def gradient_errors(model, loss_of, scale=None):
    """Relative error of every parameter's gradient; ``loss_of(grad)`` returns the report.

    ``scale``: name -> factor applied to that array's analytic gradient before the
    check (see :func:`errors_with_one_gradient_broken`).  Returns ``(errors, report,
    analytic)``: name -> error, the report of the call with gradients, and a copy of
    those gradients (as checked).
    """
    report = loss_of(True)
    analytic = {name: grad.copy() for name, grad in model.grads.items()}
    for name, factor in (scale or {}).items():
        analytic[name] *= factor
    errors = check_gradients(lambda: loss_of(False)["loss"], model.params, analytic)
    assert set(errors) == set(model.params)
    return errors, report, analytic


def assert_proven(errors):
    """Every error under the float64 bar, naming the worst array if not."""
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]:.2e} (all: {errors})"


def errors_with_one_gradient_broken(model, loss_of, name, by=1e-4):
    """:func:`gradient_errors` with the gradient of array ``name`` scaled by ``1 + by``:
    what the check reports for a backward pass wrong in one place, to show it has teeth."""
    return gradient_errors(model, loss_of, scale={name: 1 + by})[0]
