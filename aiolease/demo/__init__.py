"""``aiolease demo``: worker processes share items under leases; one crashes, one stops.

The parent starts an embedded moto server (unless told to use another endpoint), registers
items, and runs worker processes (:mod:`aiolease.demo._worker`). Each worker loops
``async with locker.lease(...)`` and records every hold in its own JSONL file (the format
of :mod:`aiolease.testing.history`). Midway the parent SIGKILLs one holder and SIGTERMs
another, shows a live table of the rows, and finally checks from those records that no two
holds of one item overlapped and that fencing tokens grew. A killed worker's last hold
counts until its lease's last possible expiry: its lease could not outlive that.

With ``--balance`` the workers serve a pool with ``session.serve()`` instead, and the
script is joins, a graceful stop and a kill; the figures (time to balance, handoffs,
overlaps) come from the same records.

The modules: ``_run`` (options, server and table set-up), ``_orchestrator`` (spawns and
signals the workers), ``_worker`` (the worker process), ``_views`` (plain or rich output),
``_report`` (the summary and the timeline picture), ``_balance`` (--balance's script and
summary), ``_balance_figures`` (its figures from the holds), ``_balance_timeline`` (its
picture), ``_state`` and ``_config``.
"""

from __future__ import annotations

from ._run import add_demo_arguments, run_demo

__all__ = ["add_demo_arguments", "run_demo"]
