"""How the CLI shows lease rows to people (a table) and to scripts (JSON)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiolease import LeaseItem

if TYPE_CHECKING:
    from aiolease._types import SessionRow

__all__ = ["expires_in", "item_json", "plain", "session_json", "session_lines", "table_lines"]


def table_lines(items: Sequence[LeaseItem], now_ns: int) -> list[str]:
    """``aiolease ls``'s table: a header and one aligned line per item."""
    rows: list[tuple[str, ...]] = [("ID", "HOLDER", "EXPIRES IN", "TOKEN", "ATTRIBUTES")]
    for item in items:
        attributes = ", ".join(
            f"{k}={json.dumps(plain(v))}" for k, v in sorted(item.attributes.items())
        )
        rows.append(
            (
                item.lease_id,
                item.lessee_id or "-",
                expires_in(item, now_ns),
                str(item.fencing_token),
                attributes,
            )
        )
    return _aligned(rows)


def session_lines(sessions: Sequence[SessionRow], now_ns: int) -> list[str]:
    """``aiolease ls --sessions``'s table: one line per session row (live, expired, ended)."""
    rows: list[tuple[str, ...]] = [("SESSION", "HOLDER", "EXPIRES IN", "STATE")]
    for row in sessions:
        left = "-" if row.ended else _left(row.until_ns, now_ns)
        rows.append((row.session_id, row.lessee_id or "-", left, session_state(row, now_ns)))
    return _aligned(rows)


def session_state(row: SessionRow, now_ns: int) -> str:
    """``live``, ``expired`` (not renewed in time, not ended yet) or ``ended``."""
    if row.ended:
        return "ended"
    return "live" if row.until_ns >= now_ns else "expired"


def session_json(row: SessionRow, now_ns: int) -> dict[str, Any]:
    """One row of ``aiolease ls --sessions --json``."""
    return {
        "session": row.session_id,
        "holder": row.lessee_id,
        "until": None if row.until is None else row.until.isoformat(),
        "expires_in": None if row.ended else round((row.until_ns - now_ns) / 1e9, 3),
        "state": session_state(row, now_ns),
    }


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def expires_in(item: LeaseItem, now_ns: int) -> str:
    """How long the holder's lease has left, for people: '2.9s', 'expired 1.2s ago', '-'."""
    if item.lessee_id is None:
        return "-"
    if item.session is not None:
        return f"session {item.session}"  # its LeaseUntil is MAX: the session's row tells
    if item.until_ns <= 0:
        return "never set"
    return _left(item.until_ns, now_ns)


def _left(until_ns: int, now_ns: int) -> str:
    left = (until_ns - now_ns) / 1e9
    if left < 0:
        return f"expired {_seconds(-left)} ago"
    return _seconds(left)


def _seconds(value: float) -> str:
    if value < 100:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def item_json(item: LeaseItem, now_ns: int) -> dict[str, Any]:
    """One row of ``aiolease ls --json``."""
    held = item.lessee_id is not None
    timed = held and item.session is None  # under a session, LeaseUntil is MAX
    row = {
        "id": item.lease_id,
        "holder": item.lessee_id,
        "until": item.until.isoformat() if timed and item.until is not None else None,
        "until_ns": item.until_ns,
        "expires_in": round((item.until_ns - now_ns) / 1e9, 3) if timed else None,
        "fencing_token": item.fencing_token,
        "attributes": plain(item.attributes),
    }
    if item.session is not None:
        row["session"] = item.session  # only then: rows of tables without sessions as before
    return row


def plain(value: Any) -> Any:
    """DynamoDB values (Decimal, sets, Binary) as JSON-friendly Python values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v) for v in value), key=repr)
    raw = getattr(value, "value", value)  # boto3's Binary wraps bytes
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode("ascii")
    return value
