"""Errors a user can cause, and only those.

Anything raised as an :class:`NpvaeError` is the user's to fix (a bad file, a
bad flag, a wrong shape), so its message is one line that says what was wrong
and what to do.  ``python -m npvae.train`` prints that line and exits with
status 2, with no traceback.  Every other exception is a bug in npvae and keeps
its traceback.
"""


class NpvaeError(Exception):
    """A mistake the user can fix; ``str(err)`` is the whole message."""


class DataError(NpvaeError, ValueError):
    """A data file is missing, truncated, corrupt, or not what it claims to be."""


class CheckpointError(NpvaeError, ValueError):
    """A saved model or checkpoint is damaged, or belongs to another model."""


class ConfigError(NpvaeError, ValueError):
    """A flag or config value is out of range, unknown, or inconsistent."""
