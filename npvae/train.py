"""``python -m npvae.train``: train a model, and leave a run folder that tells the whole story.

Reading order, top to bottom: :func:`main` turns user mistakes into one line
on stderr; :func:`start` makes a new run (config, data, model, optimizer) or
:func:`resume` rebuilds one from its last checkpoint; :func:`train` is the
loop; :func:`finish` evaluates and draws.

A run folder ``runs/<time>-<model>/`` holds ``config.json`` (the resolved
config, the data actually used, the versions), ``metrics.csv`` (one row per
epoch), ``checkpoints/last.npz`` and ``best.npz`` (model, optimizer, random
state, position), ``results.json`` and the figures.

Exactness: all training randomness (shuffling, dynamic binarisation, the
VAE's noise, the denoising AE's corruption) comes from one generator whose
state is in every checkpoint, and an interrupted epoch saves its batch order
and position, so a resumed run is bit-identical to an uninterrupted one.
Evaluation draws from generators seeded by (seed, epoch), apart from training.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from npvae import __version__, evaluate, kernels
from npvae._files import atomic_path, write_text
from npvae._threads import CpuWatch, use_threads
from npvae.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from npvae.config import Config, from_dict, parse_args
from npvae.data import Batches, binarize_static, load_dataset, split_validation
from npvae.data.datasets import EMBEDDED_NAME
from npvae.errors import ConfigError, DataError, NpvaeError
from npvae.models import (
    IWAE,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.optim import clip_grad_norm, make_optimizer, make_schedule

METRICS = [
    "epoch", "lr", "train_loss", "train_recon", "train_kl", "val_loss", "test_loss",
    "test_recon", "test_kl", "seconds", "examples_per_second",
]  # fmt: skip

EXIT_USER_ERROR, EXIT_NAN, EXIT_INTERRUPTED = 2, 3, 130


class TrainingStopped(Exception):
    """Raised inside the loop to end the run with a message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Run:
    """Everything a training run holds in memory."""

    config: Config
    folder: Path
    data: object  # npvae.data.Dataset
    model: object
    optimizer: object
    rng: np.random.Generator
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: float = math.inf  # best selection loss so far
    partial: dict = field(default_factory=dict)  # an interrupted epoch's order and sums


# ----- building a run --------------------------------------------------------------------


def build_model(config: Config, input_dim: int):
    """The model ``config`` asks for, for ``input_dim`` pixels."""
    common = {
        "input_dim": input_dim,
        "hidden": config.resolved_hidden(),
        "activation": config.activation,
        "init": config.init,
        "dtype": config.dtype,
        "seed": config.seed,
    }
    vae_common = {
        **common,
        "latent_dim": config.latent,
        "likelihood": config.likelihood,
        "learned_var": config.learn_var,
    }
    ae_common = {
        **common,
        "code_dim": config.latent,
        "reconstruction": "bernoulli" if config.likelihood == "bernoulli" else "squared",
    }
    if config.model == "vae":
        return VAE(
            **vae_common,
            beta=config.beta,
            warmup_steps=config.warmup,
            free_bits=config.free_bits,
            n_samples=config.samples,
        )
    if config.model == "iwae":
        return IWAE(**vae_common, k=config.k)
    if config.model == "ae":
        return Autoencoder(**ae_common)
    if config.model == "sparse-ae":
        return SparseAutoencoder(
            **ae_common,
            sparsity=config.sparsity,
            sparsity_weight=config.sparsity_weight,
            target=config.sparsity_target,
            code_activation="sigmoid" if config.sparsity == "kl" else "relu",
        )
    if config.model == "denoising-ae":
        return DenoisingAutoencoder(**ae_common, noise=config.noise, noise_level=config.noise_level)
    return ContractiveAutoencoder(**ae_common, contraction=config.contraction)


def load_data(config: Config):
    """The dataset, with the automatic MNIST-else-digits choice and the validation split."""
    if config.data_dir is not None and not Path(config.data_dir).expanduser().is_dir():
        raise ConfigError(f"--data-dir {config.data_dir} is not a folder; check the path")
    if config.dataset == "auto":
        try:
            data = load_dataset("mnist", config.data_dir)
        except DataError as err:
            if "checksum mismatch" in str(err):
                reason = "no local copy, and the downloaded files failed their checksums"
            elif "download" in str(err):
                reason = "no local copy, and the download failed"
            else:
                reason = err
            print(f"MNIST is not available ({reason}); training on the embedded digits instead")
            data = load_dataset("digits")
    else:
        data = load_dataset(config.dataset, config.data_dir)
    if config.val_size:
        data = split_validation(data, config.val_size, config.seed)
    return data


def _recorded_data(config: Config, record: dict):
    """The dataset a resumed run trained on, exactly: no automatic choice, no fallback."""
    used = record.get("dataset_used", config.dataset)
    try:
        data = load_data(replace(config, dataset=used))
    except DataError as err:
        raise DataError(f"this run trained on {used}, which cannot be loaded now: {err}") from None
    # Files are checked against their checksums; the embedded set is defined by its source.
    if used == EMBEDDED_NAME and data.source != record.get("data_source", data.source):
        raise DataError(
            f"this run trained on {record['data_source']}, but this npvae makes {data.source}"
        )
    return data


def start(config: Config) -> Run:
    """A new run: its folder, data, model and optimizer."""
    data = load_data(config)
    try:
        model = build_model(config, data.x_train.shape[1])
    except MemoryError:
        raise ConfigError(
            f"a {config.model} with hidden widths {config.resolved_hidden()} and latent size "
            f"{config.latent} does not fit in memory; reduce --hidden or --latent"
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(config.out) / f"{stamp}-{config.model}"
    for suffix in range(1, 1000):
        if not folder.exists():
            break
        folder = Path(config.out) / f"{stamp}-{config.model}-{suffix}"
    try:
        (folder / "checkpoints").mkdir(parents=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the run folder {folder}: {err.strerror}; choose another with --out"
        ) from None
    record = {
        **asdict(config),
        "hidden": config.resolved_hidden(),
        "dataset_used": data.name,
        "data_source": data.source,
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "n_test": len(data.x_test),
        "versions": _versions(),
    }
    write_text(folder / "config.json", json.dumps(record, indent=2) + "\n")
    _write_metrics(folder / "metrics.csv", [])
    optimizer = make_optimizer(config.optimizer, model.params, config.lr)
    return Run(config, folder, data, model, optimizer, np.random.default_rng(config.seed))


def resume(folder: str, given: dict) -> Run:
    """Rebuild a run from ``folder/checkpoints/last.npz``; only ``--epochs`` may change.

    It trains on the dataset the run recorded as used. ``--epochs`` may not go below
    the epochs done; equal to them, only missing results are made (after a stop in
    the final evaluation), else there is nothing to do.
    """
    folder = Path(folder)
    path = folder / "checkpoints" / "last.npz"
    if not (folder / "config.json").is_file() or not path.is_file():
        raise ConfigError(f"{folder} is not a run folder with a checkpoint (no {path.name})")
    changed = sorted(set(given) - {"epochs"})
    if changed:
        raise ConfigError(
            f"--resume continues the saved config; only --epochs may be given (got {changed})"
        )
    saved = load_checkpoint(path)
    config = from_dict({**saved.config, **given}, path)
    try:
        record = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{folder / 'config.json'} is damaged; this run cannot resume") from None
    partial = saved.extra.get("partial", {})
    if config.epochs < saved.epoch or (config.epochs == saved.epoch and partial):
        raise ConfigError(
            f"{folder} already has {saved.epoch} epochs; "
            f"to train on, give --epochs more than {saved.epoch}"
        )
    if config.epochs == saved.epoch and (folder / "results.json").is_file():
        raise TrainingStopped(
            f"nothing to do: {folder} already has its {saved.epoch} epochs and results; "
            f"to train on, give --epochs more than {saved.epoch}",
            0,
        )
    rows = _completed_metrics(folder / "metrics.csv", saved.epoch)
    data = _recorded_data(config, record)
    optimizer = make_optimizer(config.optimizer, saved.model.params, config.lr)
    optimizer.load_state_dict(saved.optimizer_state)
    run = Run(config, folder, data, saved.model, optimizer, restore_rng(saved.rng_state, path))
    run.epoch, run.step = saved.epoch, saved.step
    run.best = saved.extra.get("best", math.inf)
    run.partial = partial
    if run.partial:
        run.partial["order"] = saved.run_arrays["order"]
    _write_metrics(folder / "metrics.csv", rows)
    record["epochs"] = config.epochs
    write_text(folder / "config.json", json.dumps(record, indent=2) + "\n")
    for stale in (folder / "checkpoints").glob(".*.npz.*"):
        stale.unlink(missing_ok=True)  # a temporary file a kill -9 left mid-write
    return run


# ----- the loop --------------------------------------------------------------------------


def train(run: Run) -> None:
    """Epochs from ``run.epoch`` to ``config.epochs``; checkpoints after each.

    Ctrl-C and SIGTERM stop it after the current batch; their previous
    handlers are back however it ends (``main`` may be called again).
    """
    stop = _StopFlag()
    try:
        # The NaN guard reports a divergence in one line; numpy's overflow
        # warnings on the way there would only bury it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _train_epochs(run, stop)
    finally:
        stop.restore()


def _train_epochs(run: Run, stop: _StopFlag) -> None:
    config, model = run.config, run.model
    schedule = make_schedule(config.schedule, config.lr, **_schedule_options(config))
    batches = Batches(
        run.data.x_train,
        config.batch_size,
        run.rng,
        binarize=config.binarize,
        dtype=model.dtype,
        static_seed=config.seed,
    )
    x_val, x_test = _eval_arrays(run)
    while run.epoch < config.epochs:
        epoch = run.epoch + 1
        run.optimizer.lr = schedule(run.epoch)
        partial = run.partial or {"order": batches.draw_order(), "batch": 0, "sums": {}, "n": 0}
        run.partial = {}
        started, resumed_at = time.perf_counter(), partial["n"]
        bar = _progress(len(batches), f"epoch {epoch}/{config.epochs}", partial["batch"])
        for index, x in batches.iter_from(partial["order"], partial["batch"]):
            report = model.loss(x, run.rng, step=run.step)
            _check_finite(run, report["loss"], epoch, index)
            if config.clip:
                clip_grad_norm(model.grads, config.clip)
            run.optimizer.step(model.grads)
            run.step += 1
            for key in ("loss", "recon", "kl"):
                partial["sums"][key] = partial["sums"].get(key, 0.0) + report.get(key, 0.0) * len(x)
            partial["n"] += len(x)
            partial["batch"] = index + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{partial['sums']['loss'] / partial['n']:.2f}", refresh=False)
            if stop.signal:
                _save(run, "last.npz", partial=partial)
                raise TrainingStopped(
                    f"stopped by {stop.name} at epoch {epoch}, batch {index + 1}; checkpoint "
                    f"written; continue with: python -m npvae.train --resume {run.folder}",
                    EXIT_INTERRUPTED,
                )
        if bar is not None:
            bar.close()
        seconds = max(time.perf_counter() - started, 1e-9)
        row = _epoch_row(run, epoch, partial, x_val, x_test)
        # Speed is this process's examples over this process's time: after a mid-epoch
        # resume, the batches before the interruption were timed by another process.
        examples = partial["n"] - resumed_at
        row.update(seconds=round(seconds, 3), examples_per_second=round(examples / seconds, 1))
        run.epoch = epoch
        _append_metrics(run.folder / "metrics.csv", row)
        selection = row["val_loss"] if x_val is not None else row["train_loss"]
        if selection < run.best:
            run.best = selection
            _save(run, "best.npz")
        _save(run, "last.npz")
        print(_epoch_line(row, config.epochs), flush=True)
        if stop.signal:  # it came during the evaluation or the checkpoint
            raise TrainingStopped(
                f"stopped by {stop.name} at the end of epoch {epoch}; checkpoint written; "
                f"continue with: python -m npvae.train --resume {run.folder}",
                EXIT_INTERRUPTED,
            )


def _epoch_row(run: Run, epoch: int, partial: dict, x_val, x_test) -> dict:
    """metrics.csv's line but the timing: the epoch's running training averages and evaluations."""
    sums, n = partial["sums"], partial["n"]
    row = {
        "epoch": epoch,
        "lr": run.optimizer.lr,
        "train_loss": sums["loss"] / n,
        "train_recon": sums["recon"] / n,
        "train_kl": sums["kl"] / n if "kl" in sums and run.config.model in ("vae", "iwae") else "",
        "val_loss": "",
    }
    eval_rng = np.random.default_rng([run.config.seed, epoch, 1])
    if x_val is not None:
        row["val_loss"] = evaluate.evaluate_loss(run.model, x_val, eval_rng)["loss"]
    test = evaluate.evaluate_loss(run.model, x_test, eval_rng)
    row.update(test_loss=test["loss"], test_recon=test["recon"], test_kl=test.get("kl", ""))
    return row


def _check_finite(run: Run, loss: float, epoch: int, index: int) -> None:
    """The NaN guard: stop before a non-finite loss or gradient reaches the parameters."""
    # One compiled pass over the packed gradients: a third of the time of np.isfinite
    # on each array, every step.
    if math.isfinite(loss) and kernels.all_finite(run.model.flat_grads):
        return
    what = "loss" if not math.isfinite(loss) else "gradient"
    if (run.folder / "checkpoints" / "last.npz").is_file():
        where = f"the last good checkpoint is in {run.folder / 'checkpoints'}"
    else:
        where = "no checkpoint was written, as the run diverged in its first epoch"
    raise TrainingStopped(
        f"the {what} became NaN or infinite at epoch {epoch}, batch {index + 1}; "
        f"lower the learning rate (it was {run.optimizer.lr:g} at this step) or clip gradients "
        f"(--clip 1); {where}",
        EXIT_NAN,
    )


def _save(run: Run, name: str, partial: dict | None = None) -> None:
    extra = {"best": run.best}
    arrays = {}
    if partial is not None:
        extra["partial"] = {key: partial[key] for key in ("batch", "sums", "n")}
        arrays["order"] = partial["order"]
    save_checkpoint(
        run.folder / "checkpoints" / name,
        run.model,
        run.optimizer,
        run.rng,
        epoch=run.epoch,
        step=run.step,
        config=asdict(run.config),
        extra=extra,
        run_arrays=arrays,
    )


# ----- the end ---------------------------------------------------------------------------


def finish(run: Run) -> dict:
    """Final evaluation on the test set, ``results.json`` and the figures."""
    config, model = run.config, run.model
    _, x_test = _eval_arrays(run)
    rng = np.random.default_rng([config.seed, run.epoch, 2])
    results = {"epochs": run.epoch, "test": evaluate.evaluate_loss(model, x_test, rng)}
    if hasattr(model, "log_importance_weights"):
        if config.ll_samples:
            n = config.ll_examples or len(x_test)
            ll = evaluate.log_likelihood(model, x_test[:n], rng, n_samples=config.ll_samples)
            results["test_log_likelihood"] = {
                "nats": float(ll.mean()),
                "samples": config.ll_samples,
                "examples": len(ll),
            }
        count, variances = evaluate.active_units(model, x_test)
        results["active_units"] = count
        results["posterior_mean_variance"] = [round(float(v), 5) for v in variances]
    write_text(run.folder / "results.json", json.dumps(results, indent=2) + "\n")
    if config.figures:
        from npvae import plots  # matplotlib costs 30 MB; a run without figures never loads it

        plots.make_figures(model, x_test, run.data.y_test, run.folder, rng)
        rows = _read_metrics(run.folder / "metrics.csv")
        if rows:
            plots.plot_curves(run.folder / "curves.png", rows)
    return results


def _summary(results: dict) -> str:
    test = results["test"]
    parts = [f"test loss {test['loss']:.2f}"]
    if "kl" in test:
        parts[0] += f" (reconstruction {test['recon']:.2f}, KL {test['kl']:.2f})"
    if "test_log_likelihood" in results:
        ll = results["test_log_likelihood"]
        parts.append(f"log p(x) ≈ {ll['nats']:.2f} ({ll['samples']} samples)")
    if "active_units" in results:
        parts.append(f"{results['active_units']} active units")
    return ", ".join(parts)


# ----- helpers ---------------------------------------------------------------------------


def _eval_arrays(run: Run):
    """Validation and test images as floats of the model's dtype, binarised once if asked."""

    def prepare(images):
        if len(images) == 0:
            return None
        if run.config.binarize != "none":
            return binarize_static(images, run.config.seed + 1).astype(run.model.dtype)
        # float32 is already the model's dtype in the usual case: no second 31 MB copy.
        return (images / np.float32(255)).astype(run.model.dtype, copy=False)

    return prepare(run.data.x_val), prepare(run.data.x_test)


def _without_training_images(data):
    """``data`` with empty training arrays: the final evaluation and figures use the test set.

    Letting the training images go (47 MB for MNIST) before the evaluation and matplotlib
    allocate theirs keeps the peak memory of a classic MNIST run under 300 MB.
    """
    return replace(
        data,
        x_train=np.empty((0, data.x_train.shape[1]), data.x_train.dtype),
        y_train=np.empty(0, data.y_train.dtype),
    )


def _schedule_options(config: Config) -> dict:
    if config.schedule == "step":
        return {"step_size": config.lr_step, "gamma": config.lr_gamma}
    if config.schedule == "exponential":
        return {"gamma": config.lr_gamma}
    return {}


class _StopFlag:
    """Ctrl-C and SIGTERM ask the loop to stop after the current batch."""

    def __init__(self) -> None:
        self.signal = None
        self._previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _progress(total: int, description: str, initial: int):
    """A tqdm bar on a terminal; None otherwise (then one line per epoch is printed)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, leave=False, mininterval=0.5)


def _epoch_line(row: dict, epochs: int) -> str:
    line = f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.2f}"
    if row["val_loss"] != "":
        line += f"  val {row['val_loss']:.2f}"
    line += f"  test {row['test_loss']:.2f}"
    if row["test_kl"] != "":
        line += f" (recon {row['test_recon']:.2f}, KL {row['test_kl']:.2f})"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_second']:.0f} ex/s"


def _versions() -> dict:
    import numba

    return {"npvae": __version__, "numpy": np.__version__, "numba": numba.__version__}


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, METRICS)
        writer.writeheader()
        writer.writerows(rows)


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", newline="") as file:
        csv.DictWriter(file, METRICS).writerow({key: _format(row.get(key, "")) for key in METRICS})


def _format(value):
    return repr(value) if isinstance(value, float) else value


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _completed_metrics(path: Path, epochs: int) -> list[dict]:
    """metrics.csv's rows of epochs 1 to ``epochs``; a ConfigError if it is damaged.

    Rows of later epochs (appended just before a kill, with no checkpoint after) are dropped.
    """
    try:
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if int(row["epoch"]) <= epochs]
        whole = reader.fieldnames == METRICS and all(None not in [*r, *r.values()] for r in rows)
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError):
        whole = False
    if not whole or [int(row["epoch"]) for row in rows] != list(range(1, epochs + 1)):
        raise ConfigError(
            f"{path} is missing or damaged (its checkpoint has {epochs} epochs); "
            "this run cannot resume"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m npvae.train``; a user's mistake is one line on stderr, status 2."""
    watch = CpuWatch()  # what other work uses while we load, for --threads auto
    try:
        config, given, resume_dir = parse_args(argv)
        run = resume(resume_dir, given) if resume_dir else start(config)
        print(f"run folder: {run.folder}", flush=True)
        print(f"data: {run.data.summary()}", flush=True)
        print(f"model: {run.model!r}", flush=True)
        count, reason = use_threads(run.config.threads, watch)
        print(f"threads: {count} ({reason})", flush=True)
        train(run)
        run.data = _without_training_images(run.data)
        results = finish(run)
        print(f"done: {_summary(results)}", flush=True)
        return 0
    except TrainingStopped as stop:
        print(stop, file=sys.stderr if stop.status else sys.stdout)
        return stop.status
    except NpvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print(
            "error: a batch does not fit in memory; reduce --batch-size, --k, --samples, "
            "--ll-samples or --hidden",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # Ctrl-C outside the loop (loading data, the final evaluation): nothing half-written.
        print("interrupted; the last checkpoint, if any, is intact", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
