"""The run folder: its layout, its making, its lock, and every file in it.

``python -m npvae.train`` makes one folder per run; ``--resume``, ``python -m
npvae.evaluate``, ``python -m npvae.figures`` and ``benchmarks/reproduce_iwae.py``
read it back.  All of them go through this module, and only this module knows
the layout::

    <out>/<yyyymmdd-hhmmss>-<model>[-<n>]/
        config.json       the resolved settings, the data used, the versions, the changes
        metrics.csv       one row per epoch (:data:`METRICS`)
        results.json      the final evaluation of the last epoch's weights
        eval.json         evaluations by ``python -m npvae.evaluate``, one key each
        checkpoints/      last.npz, best.npz
        figures/          the PNGs, training's and ``python -m npvae.figures``'s alike
        snapshots/        copies of last.npz by epoch (``benchmarks/reproduce_iwae.py``)
        .lock             held by the process that trains the run; it names that process

Two rules keep concurrent runs from losing each other.  A new folder is filled
under a hidden name of its own (``mkdtemp``) and renamed whole onto a name
claimed with ``mkdir``, which the kernel gives to exactly one process: runs
started in the same second get ``-1``, ``-2``, ... and no process deletes a
folder it did not make.  A run being trained holds an exclusive ``flock`` on
its ``.lock``, which the kernel releases when the process ends however it
ends, so a second ``--resume`` is refused while the first trains and a run
killed with ``kill -9`` can resume at once.  The lock is written by hand
rather than with ``filelock`` so that the refusal can name the process that
holds it.

Paths a run records (``data_dir``, the weights in ``eval.json``) are
absolute, so a run resumes and evaluates from any working directory.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import tempfile
import time
from pathlib import Path

from npvae._files import atomic_path, current_umask, write_text
from npvae.errors import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

CONFIG, METRICS_FILE, RESULTS, EVALUATIONS = (
    "config.json",
    "metrics.csv",
    "results.json",
    "eval.json",
)
CHECKPOINTS, FIGURES, SNAPSHOTS, LOCK = "checkpoints", "figures", "snapshots", ".lock"

#: metrics.csv's columns, in order.
METRICS = [
    "epoch", "lr", "train_loss", "train_recon", "train_kl", "val_loss", "test_loss",
    "test_recon", "test_kl", "seconds", "examples_per_second",
]  # fmt: skip

#: Names tried after ``<stamp>-<model>`` is taken: ``-1`` to ``-9999``.
_MAX_SUFFIX = 10_000


def find_runs(out: str | os.PathLike) -> list[Path]:
    """The run folders under ``out``, by name (a folder being made, hidden, is not one yet)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


class RunBusy(ConfigError):
    """Another process holds the run's lock: it is training the run now."""


# ----- making a run folder, and its lock -----------------------------------------------------


def create(out: str | os.PathLike, model: str, fill) -> tuple[Path, RunLock]:
    """Make a new run folder under ``out`` for ``model``; returns ``(folder, lock)``.

    ``fill(staging)`` writes the run's first files into a hidden folder of this
    process's own (config, empty metrics, a checkpoint at step 0); only then is
    it renamed to ``<out>/<stamp>-<model>[-n]``, so a run folder is never seen
    half-made, and can always resume.  The returned lock is held: release it
    (or end the process) when training ends.  An ``OSError`` (a read-only or
    full disk) is a ConfigError naming ``--out``; on any failure what this
    call made is removed, and nothing else.
    """
    out = Path(out).absolute()
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"
    staging = claimed = lock = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{stamp}.", suffix=".part", dir=out))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0o700 is for secrets; a run is not
        lock = RunLock.acquire(staging)  # the lock is on the file, so it follows the rename
        (staging / CHECKPOINTS).mkdir()
        fill(staging)
        claimed = _claim(out, stamp)
        os.rename(staging, claimed)  # onto the empty folder this process just made
        return claimed, lock
    except BaseException as err:
        if lock is not None:
            lock.release()
        if staging is not None and staging.exists():
            _remove_tree(staging)
        if claimed is not None:
            with contextlib.suppress(OSError):
                claimed.rmdir()  # only if still empty: the rename did not happen
        if isinstance(err, OSError):
            raise ConfigError(
                f"cannot create a run folder in {out}: {err.strerror}; choose another with --out"
            ) from None
        raise


def _claim(out: Path, stamp: str) -> Path:
    """A name under ``out`` that no other folder has, made (empty) by this process."""
    for suffix in range(_MAX_SUFFIX):
        folder = out / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"{out} has {_MAX_SUFFIX} runs named {stamp}; choose another --out")


def _remove_tree(folder: Path) -> None:
    """Remove ``folder``, which this process made, bottom up."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


class RunLock:
    """An exclusive lock on a run folder, held by the process that trains it."""

    def __init__(self, handle: int | None, folder: Path) -> None:
        self._handle = handle
        self.folder = folder

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        """Lock ``folder`` for this process, or raise.

        :class:`RunBusy` names the process that holds it; a folder that cannot
        be written (read-only, not ours) is a ConfigError that says so.
        """
        folder = Path(folder)
        if fcntl is None:
            return cls(None, folder)
        try:
            handle = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise _read_only(folder, err.strerror) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(handle)
            os.close(handle)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(f"cannot lock {folder / LOCK}: {err.strerror}") from None
            who = f"process {holder}" if holder else "another process"
            raise RunBusy(
                f"{folder} is being trained by {who}; wait for it to end (or stop it) "
                "before resuming this run"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        return cls(handle, folder)

    def release(self) -> None:
        """Let the run go (the kernel does the same when the process ends)."""
        if self._handle is not None:
            os.close(self._handle)  # closing the file drops its flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable(folder: Path) -> None:
    """A ConfigError unless this process can write ``folder`` and its checkpoints."""
    for place in (Path(folder), Path(folder) / CHECKPOINTS):
        if place.is_dir() and not os.access(place, os.W_OK):
            raise _read_only(folder, "read-only")


def _read_only(folder: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"{folder} cannot be written ({reason}); a run trains only in a folder it can write: "
        "copy it somewhere writable and resume the copy"
    )


def _read_holder(handle: int) -> int | None:
    """The process id written in a lock file, or None if it cannot be read."""
    try:
        return int(os.pread(handle, 32, 0).decode().strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def absolute(path: str | os.PathLike) -> str:
    """``path`` made absolute (``~`` expanded), as a run records it."""
    return str(Path(path).expanduser().absolute())


# ----- the files ----------------------------------------------------------------------------


def checkpoint_path(folder: Path, which: str) -> Path:
    """``folder/checkpoints/<which>.npz`` (``which``: ``"last"`` or ``"best"``)."""
    return Path(folder) / CHECKPOINTS / f"{which}.npz"


def figures_folder(folder: Path) -> Path:
    """``folder/figures``, where every figure of a run goes (made if missing)."""
    figures = Path(folder) / FIGURES
    figures.mkdir(exist_ok=True)
    return figures


def figure_path(folder: Path, name: str) -> Path:
    """Where a run's figure ``name`` (``"samples"``, ...) goes: ``folder/figures/<name>.png``."""
    return Path(folder) / FIGURES / f"{name}.png"


def write_config(folder: Path, details: dict) -> None:
    """config.json: the resolved settings and what else the run records."""
    write_text(Path(folder) / CONFIG, json.dumps(details, indent=2) + "\n")


def read_config(folder: Path) -> dict:
    """config.json's contents; a ConfigError naming it when it is missing or damaged."""
    path = Path(folder) / CONFIG
    try:
        details = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        details = None
    if (
        not isinstance(details, dict)
        or not isinstance(details.get("dataset_used", ""), str)
        or not isinstance(details.get("changes", []), list)
    ):
        raise ConfigError(f"{path} is missing or damaged")
    return details


def write_metrics(folder: Path, rows: list[dict]) -> None:
    """metrics.csv with exactly ``rows`` (written whole, atomically)."""
    with atomic_path(Path(folder) / METRICS_FILE) as temporary:
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, METRICS)
            writer.writeheader()
            writer.writerows({key: _format(row.get(key, "")) for key in METRICS} for row in rows)


def append_metrics(folder: Path, row: dict) -> None:
    """Add one epoch's row to metrics.csv (floats written to the last digit)."""
    with open(Path(folder) / METRICS_FILE, "a", newline="") as file:
        csv.DictWriter(file, METRICS).writerow({key: _format(row.get(key, "")) for key in METRICS})


def _format(value):
    return repr(value) if isinstance(value, float) else value


def read_metrics(folder: Path) -> list[dict]:
    """metrics.csv's rows as strings, epochs 1, 2, ... in order.

    A ConfigError names the file when it is missing, damaged (a header or a
    row that is not :data:`METRICS`, an epoch or a loss that is not a number)
    or out of order.
    """
    path = Path(folder) / METRICS_FILE
    try:
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
        whole = reader.fieldnames == METRICS and all(None not in [*r, *r.values()] for r in rows)
        epochs = [int(row["epoch"]) for row in rows]
        for row in rows:
            float(row["train_loss"])
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError):
        whole, epochs = False, []
    if not whole or epochs != list(range(1, len(rows) + 1)):
        raise ConfigError(f"{path} is missing or damaged")
    return rows


def completed_metrics(folder: Path, epochs: int) -> list[dict]:
    """metrics.csv's rows of epochs 1 to ``epochs``, as a checkpoint at ``epochs`` needs them.

    Rows of later epochs (appended just before a kill, with no checkpoint
    after them) are dropped.  A ConfigError if the file is damaged or short.
    """
    try:
        rows = read_metrics(folder)
    except ConfigError:
        rows = []
    if len(rows) < epochs:
        raise ConfigError(
            f"{Path(folder) / METRICS_FILE} is missing or damaged (its checkpoint has {epochs} "
            "epochs); this run cannot resume"
        )
    return rows[:epochs]


def write_results(folder: Path, results: dict) -> None:
    """results.json: the final evaluation of a training run."""
    write_text(Path(folder) / RESULTS, json.dumps(results, indent=2) + "\n")


def has_results(folder: Path) -> bool:
    """Whether the run has finished its final evaluation."""
    return (Path(folder) / RESULTS).is_file()


# ----- evaluations ----------------------------------------------------------------------------


def evaluations_path(folder: Path | None, source: Path) -> Path:
    """Where evaluations of a model go: its run's ``eval.json``, else ``<file>.eval.json``."""
    if folder is not None:
        return Path(folder) / EVALUATIONS
    return Path(source).with_name(Path(source).stem + ".eval.json")


def read_evaluations(path: Path, given: bool = False) -> dict:
    """The evaluations already in ``path`` (``{}`` if it does not exist).

    A file that is not npvae's evaluations is never overwritten: a
    ConfigError says so, and what to do (``given``: the path came from ``--out``).
    """
    if not path.exists():
        return {}
    try:
        existing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        existing = None
    if isinstance(existing, dict) and isinstance(existing.get("evaluations"), dict):
        return existing["evaluations"]
    if given:
        raise ConfigError(
            f"--out {path} holds something other than npvae's evaluations; give a new file, "
            "or one that python -m npvae.evaluate wrote"
        )
    raise ConfigError(
        f"{path} is damaged (not evaluations npvae can read); move it away, or give --out"
    )


def add_evaluation(path: Path, key: str, record: dict, given: bool = False) -> None:
    """Add ``record`` to the evaluations in ``path`` under ``key``, keeping the others.

    Two evaluations that finish at once both land: the read and the write are
    done under a lock on the file's folder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # --out may name a new folder
        with _file_lock(path):
            evaluations = read_evaluations(path, given)
            evaluations[key] = record
            write_text(path, json.dumps({"evaluations": evaluations}, indent=2) + "\n")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}; give --out") from None


@contextlib.contextmanager
def _file_lock(path: Path):
    """Hold an exclusive, waiting lock on the folder that holds ``path``, for the block.

    The lock is on the folder, not the file: the write replaces the file by a
    rename, and a lock on the old file would not hold the new one.
    """
    if fcntl is None:
        yield
        return
    handle = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)
