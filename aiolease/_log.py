"""The library's logger, replaceable with :func:`set_logger` (the seed's ``SetLogger``)."""

from __future__ import annotations

import logging

__all__ = ["get_logger", "set_logger"]

_logger: logging.Logger = logging.getLogger("aiolease")


def set_logger(logger: logging.Logger) -> None:
    """Send every aiolease log record to ``logger`` instead of ``logging.getLogger("aiolease")``.

    Records about one lease carry ``lease_id``, ``lessee_id`` and ``fencing_token`` as
    ``extra`` fields. Raises ``TypeError`` for anything but a ``logging.Logger``.
    """
    global _logger
    if not isinstance(logger, logging.Logger):
        raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")
    _logger = logger


def get_logger() -> logging.Logger:
    """The logger aiolease currently writes to."""
    return _logger
