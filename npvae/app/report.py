"""One evaluation of a saved model: the numbers as a JSON-able record, and as a table.

:func:`evaluate_saved` runs the estimators that suit the model on prepared
test images; :func:`format_table` prints the record for a person;
:func:`evaluation_key` names it in ``eval.json``, where each evaluation is
kept under its own key (weights, k, test images, seed), so a second
evaluation does not erase the first.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from npvae import estimators
from npvae.app.runs import DATASET_TITLES
from npvae.validate import counted

#: Decoder rows per chunk of the importance sampler.  Measured on 2 cores (the paper's
#: 784-200-200-50 net): 5,000 rows ran 1.11 s where 20,000 took 1.4-1.6 s and 2,000
#: 1.2-1.3 s; about 30 MB of arrays at a time.
CHUNK_ROWS = 5_000

#: The same for a training run's closing estimate (a few samples on a few images): smaller
#: chunks keep the run's peak memory, reached in the figures after it, where it was.
TRAINING_CHUNK_ROWS = 2_000


def evaluation_key(
    checkpoint: str, epoch: int | None, k: int | None, n_test: int, seed: int, kind: str = ""
) -> str:
    """``"best@10 k=5000 n_test=10000 seed=1"``: what makes two evaluations different.

    ``k`` is None for an autoencoder, which draws no importance samples: its key has no k.
    ``kind`` names another sort of evaluation: ``"probe"`` gives ``"best@10 probe n_test=..."``.
    """
    weights = checkpoint if epoch is None else f"{checkpoint}@{epoch}"
    samples = "" if k is None else f" k={k}"
    what = f" {kind}" if kind else ""
    return f"{weights}{samples}{what} n_test={n_test} seed={seed}"


def evaluate_saved(
    saved, x: np.ndarray, *, k: int, seed: int, progress=None, workers: int = 1
) -> dict:
    """Evaluate ``saved.model`` (a :class:`npvae.app.runs.SavedRun`) on test images ``x (N, D)``.

    ``x`` is already prepared (scaled, binarised once if the model trained on
    binary data).  ``seed`` seeds every draw; the numbers are
    :func:`evaluate_model`'s, headed by what was evaluated.  Returns the
    JSON-able record that ``eval.json`` keeps.
    """
    record: dict = {
        "model": saved.title(),
        "weights": str(Path(saved.source).absolute()),
        "checkpoint": saved.checkpoint,
        "epoch": saved.epoch,
        "step": saved.step,
        "n_test": len(x),
        "seed": seed,
    }
    rng = np.random.default_rng(seed)
    record.update(evaluate_model(saved.model, x, rng, k=k or 0, progress=progress, workers=workers))
    return record


def evaluate_model(
    model, x: np.ndarray, rng: np.random.Generator, *, k: int, ll_images: int | None = None,
    progress=None, max_rows: int = CHUNK_ROWS, workers: int = 1,
) -> dict:  # fmt: skip
    """The numbers of one evaluation of ``model`` on test images ``x (N, D)``, JSON-able.

    Both records of a run hold this: training's ``results.json`` and
    ``eval.json``'s entries.  ``rng`` draws, in order, the noise of the test
    loss (so ``test.loss`` is the loss its draws give: training passes the
    generator of its last ``metrics.csv`` row), a denoising AE's corruption,
    then the importance samples.  ``k`` importance samples per image for a VAE
    or IWAE (0: no log-likelihood), on the first ``ll_images`` images (None:
    all), at most ``max_rows`` decoder rows at a time, in ``workers`` threads
    (the estimates do not depend on how many).  ``progress(done)`` is called as
    images finish.

    Returns ``test`` (the model's loss and its terms per image: ``loss``, the
    objective it trained on; ``recon``; for a VAE or IWAE ``elbo`` and ``kl``,
    and the IWAE's ``bound``, unless it trained on the mean of k ELBOs, which
    is ``-loss``); for an autoencoder ``unit`` and what its variant is judged
    by; for a VAE or IWAE ``kl_per_dim``, ``active_units`` and, with ``k``,
    ``log_likelihood`` (nats, its standard error over images, k, images).
    """
    test = estimators.evaluate_loss(model, x, rng)
    if not hasattr(model, "log_importance_weights"):
        metrics = estimators.autoencoder_metrics(model, x, rng)
        if progress is not None:
            progress(len(x))
        return {"test": {"loss": test["loss"], **_jsonable(metrics)}, "unit": _ae_unit(model)}

    kl_per_dim = test.pop("kl_per_dim")
    record: dict = {"test": {key: test[key] for key in ("loss", "elbo", "recon", "kl")}}
    if "bound" in test and model.config.get("objective") != "vae":  # the IWAE's L_k
        record["test"]["bound"] = test["bound"]
        record["test"]["bound_k"] = int(model.config["k"])
    elif model.config.get("beta", 1.0) != 1.0:
        record["test"]["beta"] = float(model.config["beta"])  # the loss weighs the KL by it
    record["kl_per_dim"] = [round(float(v), 6) for v in kl_per_dim]
    count, variances = estimators.active_units(model, x)
    record["active_units"] = {
        "count": count,
        "of": int(model.latent_dim),
        "threshold": estimators.ACTIVE_THRESHOLD,
        "variances": [round(float(v), 6) for v in variances],
    }
    if model.kind == "iwae2":  # per stochastic layer, as the IWAE paper counts them
        first, second = model.config["latent1"], model.config["latent2"]
        active = variances > estimators.ACTIVE_THRESHOLD
        record["active_units"]["layers"] = {
            "z1": [int(active[:first].sum()), first],
            "z2": [int(active[first:].sum()), second],
        }
    if k > 0:
        images = x if ll_images is None else x[:ll_images]
        started = time.perf_counter()
        sampled = estimators.importance_sampled(
            model, images, rng, n_samples=k, max_rows=max_rows, progress=progress,
            workers=workers,
        )  # fmt: skip
        record["log_likelihood"] = {
            "nats": float(sampled.log_px.mean()),
            "standard_error": estimators.standard_error(sampled.log_px),
            "k": k,
            "images": len(images),
            "elbo_same_samples": float(sampled.elbo.mean()),
            "monte_carlo_error": float(np.sqrt(np.mean(sampled.mc_error**2) / len(images))),
            "seconds": round(time.perf_counter() - started, 2),
        }
    elif progress is not None:
        progress(len(x))
    return record


def _ae_unit(model) -> str:
    if model.config.get("reconstruction") == "bernoulli":
        return "nats of cross-entropy per image"
    return "squared error per image"


def _jsonable(metrics: dict) -> dict:
    return {
        key: [round(float(v), 6) for v in value] if isinstance(value, np.ndarray) else value
        for key, value in metrics.items()
    }


def format_table(record: dict) -> str:
    """The record as the lines a person reads (no trailing newline)."""
    lines = [record["model"], f"  weights      {record['weights']}"]
    dataset = DATASET_TITLES.get(record.get("dataset"), record.get("dataset", "?"))
    binarized = record.get("binarize_seed")
    how = "binarised once with seed" if binarized is not None else "grey levels; draws from seed"
    lines.append(
        f"  test set     {counted(record['n_test'], 'image')} of {dataset}, {how} {record['seed']}"
    )
    test = record["test"]
    if "unit" in record:
        lines.append(f"  reconstruction error  {test['recon']:.4f}  ({record['unit']})")
        if "recon_corrupted" in test:
            lines.append(f"    from corrupted inputs  {test['recon_corrupted']:.4f}")
        if "jacobian_frobenius" in test:
            lines.append(
                f"  encoder Jacobian, mean Frobenius norm  {test['jacobian_frobenius']:.4f}"
            )
        if "mean_activation" in test:
            activations = np.array(test["mean_activation"])
            target = f", target {test['target']:g}" if "target" in test else ""
            lines.append(f"  code units' mean activation{target}:")
            lines += _columns([f"h{j + 1:<3} {a:.4f}" for j, a in enumerate(activations)])
        return "\n".join(lines)

    lines.append("                                  nats per image")
    if "bound" in test:
        lines.append(f"  k-sample bound L_{test['bound_k']:<4}            {test['bound']:10.2f}")
    lines.append(f"  ELBO (one sample)               {test['elbo']:10.2f}")
    lines.append(f"    reconstruction  -E[log p(x|z)]  {test['recon']:8.2f}")
    lines.append(f"    KL(q(z|x) || p(z))              {test['kl']:8.2f}")
    if "log_likelihood" in record:
        ll = record["log_likelihood"]
        se = "" if ll["standard_error"] is None else f" ± {ll['standard_error']:.2f}"
        lines.append(
            f"  log p(x), {counted(ll['k'], 'importance sample')} {ll['nats']:8.2f}{se}"
            f"   ({ll['seconds']:.1f} s)"
        )
        lines.append(f"    ELBO from the same samples    {ll['elbo_same_samples']:10.2f}")
    units = record["active_units"]
    lines.append(
        f"  active units                    {units['count']:>7} of {units['of']}"
        f"   (Var_x E[z_u] > {units['threshold']:g})"
    )
    for layer, (count, of) in units.get("layers", {}).items():
        lines.append(f"    in {layer}                         {count:>7} of {of}")
    lines.append("  per dimension, most KL first: KL (nats) / Var_x E[z_u]")
    kl, variances = np.array(record["kl_per_dim"]), np.array(units["variances"])
    cells = [f"z{j + 1:<3} {kl[j]:5.2f} / {variances[j]:.3f}" for j in np.argsort(-kl)]
    lines += _columns(cells)
    return "\n".join(lines)


def _columns(cells: list[str], per_line: int = 4) -> list[str]:
    """``cells`` laid out ``per_line`` to a line, indented under their heading."""
    return [
        "    " + "   ".join(cells[start : start + per_line])
        for start in range(0, len(cells), per_line)
    ]
