"""The library's logger, replaceable with :func:`set_logger` (the Go package's ``SetLogger``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import Lease

__all__ = ["get_logger", "lease_fields", "set_logger"]

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


def lease_fields(lease: Lease) -> dict[str, Any]:
    """The structured fields (``extra``) of every log record about a lease."""
    return {
        "lease_id": lease.lease_id,
        "lessee_id": lease.lessee_id,
        "fencing_token": lease.fencing_token,
    }
