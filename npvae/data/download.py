"""Download a dataset's missing files from its mirrors, checked, all or nothing.

Hand-written rather than pooch, because the SHA-256 checked here is of the
*decompressed* file (mirrors and Debian recompress the same IDX data, so the
gzip bytes differ from copy to copy), while pooch checks the hash of the bytes
it downloads.

Every missing file is fetched into a hidden temporary file in the target
folder, checked, and only when every one has passed are they renamed into
place.  A refused connection, a timeout, an HTTP error or a checksum mismatch
moves on to the next mirror; when no mirror serves a file, the temporaries
(and any folder the download created) are removed and
:class:`~npvae.errors.DataError` says what each mirror answered.
``$NPVAE_MIRROR`` replaces the mirror list with one base URL (``{name}`` in it
is replaced by the dataset name); the tests point it at a local HTTP server.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from npvae.data.idx import decompressed_sha256, is_gzip_bytes
from npvae.data.specs import DataFile, DatasetSpec, file_in
from npvae.errors import DataError

#: Environment variable replacing the mirror list with one base URL.
MIRROR_ENV = "NPVAE_MIRROR"

#: Seconds to wait for a name lookup, a connection, or the next block of data.
#: Short, so that an offline machine finds out in seconds, not minutes.
TIMEOUT_SECONDS = 5.0

_BLOCK_BYTES = 1 << 16


def mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    """The base URLs to try for ``spec``: ``$NPVAE_MIRROR`` alone if set."""
    override = os.environ.get(MIRROR_ENV, "").strip()
    bases = (override.replace("{name}", spec.name),) if override else spec.mirrors
    return tuple(base if base.endswith("/") else base + "/" for base in bases)


def download_dataset(spec: DatasetSpec, target: Path, *, progress: bool | None = None) -> str:
    """Download the files of ``spec`` missing from ``target``, all or nothing.

    Parameters
    ----------
    spec : DatasetSpec
        What to fetch, and from where (overridden by ``$NPVAE_MIRROR``).
    target : Path
        The folder to fill; created if needed, and removed again (if empty)
        when the download fails.
    progress : bool, optional
        Show a tqdm bar on stderr; by default only when stderr is a terminal.

    Returns
    -------
    str
        The base URL of the (last) mirror that served a file.

    Raises
    ------
    DataError
        If some file could not be fetched from any mirror with the right
        checksum.  Nothing is then left in ``target``.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    created = _make_dirs(target)
    staged: list[tuple[Path, Path]] = []  # (temporary, final)
    used_mirror = ""
    try:
        for data_file in spec.files.values():
            if file_in(target, data_file) is not None:
                continue
            temporary, compressed, used_mirror = _fetch_any_mirror(
                spec, data_file, target, progress
            )
            final = target / (f"{data_file.stem}.gz" if compressed else data_file.stem)
            staged.append((temporary, final))
        for temporary, final in staged:
            os.replace(temporary, final)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: someone else's files are there
        raise
    return used_mirror


def _make_dirs(target: Path) -> list[Path]:
    """``mkdir -p target``; return the folders it created, deepest first."""
    missing = []
    folder = target
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the cache folder {target} ({err})") from None
    return missing


def _fetch_any_mirror(
    spec: DatasetSpec, data_file: DataFile, target: Path, progress: bool
) -> tuple[Path, bool, str]:
    """Fetch one file from the first mirror that serves it with the right checksum.

    Returns (temporary path in ``target``, whether it is gzip, base URL).
    """
    failures = []
    for base in mirrors_for(spec):
        url = urllib.parse.urljoin(base, f"{data_file.stem}.gz")
        handle, name = tempfile.mkstemp(prefix=f".{data_file.stem}.", suffix=".part", dir=target)
        os.close(handle)
        temporary = Path(name)
        try:
            _fetch(url, temporary, progress)
            digest = decompressed_sha256(temporary)
            if digest != data_file.sha256:
                raise DataError(
                    f"checksum mismatch (SHA-256 {digest[:12]}..., expected "
                    f"{data_file.sha256[:12]}...)"
                )
            with open(temporary, "rb") as stream:
                compressed = is_gzip_bytes(stream.read(2))
            return temporary, compressed, base
        except DataError as err:
            temporary.unlink(missing_ok=True)
            failures.append(f"{url}: {err}")
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    raise DataError(" / ".join(failures))


def _fetch(url: str, destination: Path, progress: bool) -> None:
    """Stream ``url`` into ``destination``, with short timeouts.

    Raises
    ------
    DataError
        On any network or HTTP failure, with a short reason.
    """
    _resolve_quickly(url)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm  # only a download needs it

            with (
                open(destination, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=url.rsplit("/", 1)[-1],
                    file=sys.stderr,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while True:
                    block = response.read(_BLOCK_BYTES)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        raise DataError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DataError(f"cannot connect ({_reason(err.reason)})") from None
    except TimeoutError:
        raise DataError(f"no answer within {TIMEOUT_SECONDS:g} s (offline?)") from None
    except (ConnectionError, OSError) as err:
        raise DataError(f"connection failed ({_reason(err)})") from None


def _reason(reason) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s; offline?"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _resolve_quickly(url: str) -> None:
    """Look up the URL's host name, giving up after :data:`TIMEOUT_SECONDS`.

    Socket timeouts do not cover the name lookup, which on an offline
    machine with an unreachable resolver can hang for half a minute; so the
    lookup runs in a daemon thread that we stop waiting for.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host:
        raise DataError(f"not a URL: {url}")
    outcome: list[BaseException | None] = []

    def lookup():
        try:
            socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(TIMEOUT_SECONDS)
    if not outcome:
        raise DataError(f"cannot resolve {host} within {TIMEOUT_SECONDS:g} s (offline?)")
    if outcome[0] is not None:
        raise DataError(f"cannot resolve {host} ({_reason(outcome[0])}; offline?)")


__all__ = ["MIRROR_ENV", "TIMEOUT_SECONDS", "download_dataset", "mirrors_for"]
