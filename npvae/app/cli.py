"""How every command ends: a user's mistake in one line and status 2, a stop in one line and 130.

``python -m npvae.train``, ``.evaluate``, ``.figures`` and ``.tour`` run their
work through :func:`run`.  What a user can cause is an
:class:`~npvae.errors.NpvaeError` (its message is the whole line), or a size
that does not fit in memory; anything else is a bug in npvae and keeps its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from npvae.errors import NpvaeError

EXIT_USER_ERROR, EXIT_NAN, EXIT_INTERRUPTED = 2, 3, 130


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; the status of a user's mistake."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def run(
    body: Callable[[], int], *, out_of_memory: str, interrupted: str | Callable[[], str]
) -> int:
    """``body()``'s status, or the one line and status of what stopped it.

    ``out_of_memory``: the line for a size the checks let through that does not fit
    after all (what to lower); ``interrupted``: the line for Ctrl-C, or a function that
    makes it, for a command whose line depends on how far it got.
    """
    try:
        return body()
    except NpvaeError as err:
        return fail(str(err))
    except MemoryError:
        return fail(out_of_memory)
    except KeyboardInterrupt:
        print(interrupted() if callable(interrupted) else interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
