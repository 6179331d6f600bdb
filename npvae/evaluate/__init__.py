"""Evaluation: the estimators papers report, and ``python -m npvae.evaluate RUN``.

:mod:`npvae.estimators` holds the estimators (re-exported here);
:mod:`npvae.app.report` evaluates a saved run and formats its table;
``__main__`` is the command line.
"""

from npvae.estimators import (
    ImportanceSampled,
    active_units,
    autoencoder_metrics,
    batch_seeds,
    evaluate_loss,
    importance_sampled,
    log_likelihood,
    reconstruction_error,
)

__all__ = [
    "ImportanceSampled",
    "active_units",
    "autoencoder_metrics",
    "batch_seeds",
    "evaluate_loss",
    "importance_sampled",
    "log_likelihood",
    "reconstruction_error",
]
