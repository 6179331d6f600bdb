"""Evaluation: the estimators papers report, and ``python -m npvae.evaluate RUN``.

:mod:`npvae.evaluate.estimators` holds the estimators (re-exported here);
:mod:`npvae.evaluate.report` evaluates a saved run and formats its table;
``__main__`` is the command line.
"""

from npvae.evaluate.estimators import (
    ImportanceSampled,
    active_units,
    autoencoder_metrics,
    evaluate_loss,
    importance_sampled,
    log_likelihood,
    reconstruction_error,
)

__all__ = [
    "ImportanceSampled",
    "active_units",
    "autoencoder_metrics",
    "evaluate_loss",
    "importance_sampled",
    "log_likelihood",
    "reconstruction_error",
]
