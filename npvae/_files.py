"""Atomic file writes: a file is either its old self or wholly new, never half-written.

Every file npvae writes (checkpoints, models, figures, ``metrics.csv``, the JSON
records) goes through :func:`atomic_path`: the content is written to a
temporary file in the same folder, flushed to disk, and renamed over the
target, which POSIX makes atomic.  A crash, ``kill -9`` or full disk at any
moment leaves the previous file intact and no temporary behind (the temporary
is removed on any exception; after ``kill -9`` a hidden ``.name.*`` file may
remain, and the target is still whole).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from npvae.errors import ConfigError


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` if the block ends without error.

    Write the content to the yielded path (``suffix`` keeps an extension that
    a writer reads, such as ``.png`` for matplotlib).  On success the file gets
    the permissions a new file would (``0o666`` less the umask; ``mkstemp``
    alone gives ``0o600``), is synced to disk and renamed over ``path``, and the
    folder is synced so the rename survives a power cut.  On any exception the
    temporary is removed and ``path`` is untouched.  Raises ``OSError`` if the
    folder cannot be written.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~current_umask())
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_output(
    path: str | os.PathLike,
    flag: str = "--out",
    advice: str = "choose another path",
    png: bool = True,
    example: str = "figure.png",
) -> Path:
    """``path``, absolute, once it is known that it can be written: a ConfigError if not.

    Checked before any work is done, so that a long computation does not end in
    an error, and nothing is made: the writer makes the missing folders
    (``plots.save_figure``), so a run stopped early leaves none behind.  The
    ConfigError is one line naming ``path`` as the user gave it (``flag`` says
    where it came from) and ending in ``advice``: ``path`` is a folder; a part
    of its folder is a file; the nearest folder of it that exists cannot be
    written in (no permission, or a read-only file system); or, with ``png``,
    it is a file but not a PNG (a figure replaces a figure, never another file).
    ``example`` is the file name the folder's message suggests.
    """
    given = Path(path)
    target = given.expanduser().absolute()
    if target.is_dir():
        raise ConfigError(
            f"{flag} {given} is a folder; give a file name in it, such as {given / example}"
        )
    existing = next(folder for folder in target.parents if os.path.lexists(folder))
    if not existing.is_dir():
        raise ConfigError(f"{flag} {given}: {existing} is a file, not a folder; {advice}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = _why_unwritable(existing)
        raise ConfigError(f"{flag} {given}: cannot write in {existing} ({why}); {advice}")
    if png and target.exists() and not _begins_with(target, PNG_SIGNATURE):
        raise ConfigError(f"{flag} {given} exists and is not a PNG, so it is kept; {advice}")
    return target


def _why_unwritable(folder: Path) -> str:
    """Why a folder refuses writes: a read-only file system, or its permissions."""
    read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
    return "a read-only file system" if read_only else "no permission to write there"


def _begins_with(path: Path, signature: bytes) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(signature)) == signature
    except OSError:
        return False
