"""The mutual-exclusion checker, shared with the demo: see :mod:`aiolease.testing.history`."""

from __future__ import annotations

from aiolease.testing.history import Hold, Report, check_history

__all__ = ["Hold", "Report", "check_history"]
