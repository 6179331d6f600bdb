"""``python -m npvae.evaluate RUN``: the literature's numbers for any saved run or model.

RUN is a run folder (its ``checkpoints/best.npz``, or ``--checkpoint last``), a
checkpoint file, or a model file written by ``Model.save``.  A run is
evaluated on the test split of the dataset it trained on, found as training
finds it; a bare model file names its data with ``--dataset`` and
``--binarize``.  ``--probe`` fits a linear probe to the codes of the training
set instead (:mod:`npvae.evaluate.probing`).  The table goes to stdout, and
the record into ``eval.json`` (in the run folder, or ``<model>.eval.json``
beside a model file) under a key of its own.  A mistake is one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from npvae import __version__
from npvae._files import check_output
from npvae.app import _warm, cli, runfolder, runs
from npvae.app._threads import CpuWatch, parse_threads, use_threads
from npvae.app.config import Config, validate
from npvae.app.flags import OneLineParser, whole_number
from npvae.app.memory import check_evaluation
from npvae.app.report import evaluate_saved, evaluation_key, format_table
from npvae.errors import ConfigError
from npvae.evaluate.probing import format_probe, probe_saved
from npvae.validate import model_setting

#: Importance samples per image by default, as Burda et al. (2016) report.
DEFAULT_K = 5000


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m npvae.evaluate",
        description="Evaluate a saved run or model on its test set: the ELBO and its terms, "
        "the importance-sampled log-likelihood, active units (VAE, IWAE); reconstruction "
        "error and each variant's measure (autoencoders).",
        allow_abbrev=False,
    )
    parser.add_argument("run", metavar="RUN", help="run folder, checkpoint or model file")
    parser.add_argument(
        "--checkpoint",
        choices=runs.CHECKPOINTS,
        default="best",
        help="which weights of a run folder (default: best)",
    )
    parser.add_argument(
        "--k",
        type=whole_number("--k"),
        default=None,
        help="importance samples per image, for a VAE or IWAE (default: 5000, as Burda et al.; "
        "0: skip)",
    )
    parser.add_argument(
        "--n-test", type=whole_number("--n-test"), default=0, help="test images (default: 0, all)"
    )
    parser.add_argument(
        "--seed",
        type=whole_number("--seed"),
        default=None,
        help="seed of the test set's one binarisation and of every draw "
        "(default: the run's own, the draw its training evaluated on; 0 for a model file)",
    )
    parser.add_argument("--data-dir", help="folder of the dataset's files (default: as training)")
    parser.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "digits"),
        help="a model file's dataset (default: mnist; a run folder knows its own)",
    )
    parser.add_argument(
        "--binarize",
        choices=("none", "static"),
        help="a model file's test images: binarised once, or grey levels "
        "(default: static for a Bernoulli decoder; a run folder knows its own)",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="instead: fit a linear probe (softmax regression) to the codes of the training "
        "set, and to its pixels, and report test accuracy",
    )
    parser.add_argument("--out", help="the JSON file to add this evaluation to")
    parser.add_argument(
        "--threads",
        default="auto",
        help="threads for the matrix products: a number, or auto (the cores other work "
        "leaves idle; default)",
    )
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    return parser


def _dataset(saved: runs.SavedRun, args) -> tuple:
    """``(dataset, binarize mode, seed, test images to use)``, as the run or the flags say."""
    if saved.config is not None:
        if args.dataset is not None or args.binarize is not None:
            raise ConfigError(
                f"{args.run} is a run that knows its dataset and binarisation; "
                "leave out --dataset and --binarize"
            )
        config = saved.config
        if args.data_dir is not None:
            config = validate(Config(**{**vars(config), "data_dir": args.data_dir}))
        data = runs.recorded_data(config, saved.record or {"dataset_used": config.dataset})
        binarize = "none" if config.binarize == "none" else "static"
        default_seed = runs.test_binarize_seed(config)
    else:
        config = Config(dataset=args.dataset or "mnist", data_dir=args.data_dir)
        data = runs.load_data(config)
        bernoulli = model_setting(saved.model.config, "likelihood")
        binarize = args.binarize or ("static" if bernoulli == "bernoulli" else "none")
        default_seed = 0
    seed = default_seed if args.seed is None else args.seed
    n = len(data.x_test) if args.n_test == 0 else min(args.n_test, len(data.x_test))
    if saved.model.config["input_dim"] != data.x_test.shape[1]:
        raise ConfigError(
            f"{args.run} takes {saved.model.config['input_dim']} pixels, "
            f"{data.name} has {data.x_test.shape[1]}"
        )
    return data, binarize, seed, n


def _test_images(saved: runs.SavedRun, args) -> tuple:
    """``(x (N, D) floats, labels (N,), dataset name, binarize mode, seed)``."""
    data, binarize, seed, n = _dataset(saved, args)
    x = runs.prepare_images(data.x_test[:n], binarize, seed, saved.model.dtype)
    return x, data.y_test[:n], data.name, binarize, seed


def _samples(saved: runs.SavedRun, k: int | None) -> int | None:
    """The importance samples to draw: ``--k``, 5000 by default; None for an autoencoder."""
    if hasattr(saved.model, "log_importance_weights"):
        return DEFAULT_K if k is None else k
    if k is not None:
        raise ConfigError(
            f"--k is for a VAE or IWAE; {saved.model.kind} has no latent prior to sample, "
            "so leave it out"
        )
    return None


def _progress(total: int):
    """A tqdm bar over the test images on a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="test images", unit="img", leave=False, mininterval=0.5)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m npvae.evaluate``; a user's mistake is one line on stderr, status 2."""
    return cli.run(
        lambda: _evaluate(argv),
        out_of_memory="out of memory; evaluate fewer images at once (--n-test)",
        interrupted="interrupted; nothing was written",
    )


def _evaluate(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    _warm.warm()  # a fresh checkout compiles in a child (see python -m npvae.train)
    watch = CpuWatch()  # what other work uses while we load, for --threads auto
    parse_threads(args.threads)
    saved = runs.open_saved(args.run, args.checkpoint)
    if args.probe:
        return _probe(saved, args, watch)
    k = _samples(saved, args.k)
    x, _, dataset, binarize, seed = _test_images(saved, args)
    threads, why = use_threads(args.threads, watch)
    check_evaluation(saved.model, len(x), k or 0, workers=threads)
    path = _evaluations_file(saved, args)
    bar = _progress(len(x))
    try:
        record = evaluate_saved(
            saved,
            x,
            k=k,
            seed=seed,
            progress=bar and (lambda done: bar.update(done - bar.n)),
            workers=threads,  # one sampler a core: see estimators.importance_sampled
        )
    finally:
        if bar is not None:
            bar.close()
    key = evaluation_key(saved.checkpoint, saved.epoch, k, len(x), seed)
    _record(record, path, key, args, dataset=dataset, binarize=binarize, seed=seed, threads=threads)
    print(format_table(record))
    _report(threads, why, path, key)
    return 0


def _evaluations_file(saved: runs.SavedRun, args):
    """The JSON file this evaluation goes into, refused now if it is not npvae's."""
    if args.out:
        path = check_output(args.out, png=False, example="eval.json")
    else:
        path = runfolder.evaluations_path(saved.folder, saved.source)
    runfolder.read_evaluations(path, given=bool(args.out))  # refused now, not after hours
    return path


def _probe(saved: runs.SavedRun, args, watch: CpuWatch) -> int:
    """``--probe``: a linear probe on the codes, into the same JSON file as any evaluation."""
    if args.k is not None:
        raise ConfigError(
            "--probe fits a classifier to the codes and draws no importance samples; "
            "leave out --k, or evaluate without --probe"
        )
    data, binarize, seed, n = _dataset(saved, args)
    path = _evaluations_file(saved, args)
    threads, why = use_threads(args.threads, watch)
    record = probe_saved(saved, data, binarize, seed, n)
    key = evaluation_key(saved.checkpoint, saved.epoch, None, n, seed, kind="probe")
    _record(
        record, path, key, args, dataset=data.name, binarize=binarize, seed=seed, threads=threads
    )
    print(format_probe(record))
    _report(threads, why, path, key)
    return 0


def _record(record: dict, path, key: str, args, *, dataset, binarize, seed, threads) -> None:
    """Add how the images were made and the threads to ``record``; write it under ``key``."""
    record.update(dataset=dataset, binarize=binarize, threads=threads)
    if binarize != "none":
        record["binarize_seed"] = seed
    runfolder.add_evaluation(path, key, record, given=bool(args.out))


def _report(threads: int, why: str, path, key: str) -> None:
    """The closing lines: the threads used, and where the record went."""
    print(f"threads: {threads} ({why})")
    print(f"written to {path} as {key!r}")


if __name__ == "__main__":
    raise SystemExit(main())
