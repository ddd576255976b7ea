"""The balancer's read of a pool: one consistent scan of items and session rows together.

``session.serve()`` needs, each wait period, every item's holder and every session's
expiry; one scan (bookkeeping attributes only) gives both, where an item scan and a session
scan would each read the whole table.
"""

from __future__ import annotations

from typing import Any

from .schema import (
    DURATION,
    HANDOFF,
    HANDOFF_UNTIL,
    KEY,
    LESSEE,
    SESSION,
    SESSION_UNTIL,
    TOKEN,
    UNTIL,
    Schema,
)

__all__ = ["scan_pool"]


def scan_pool(schema: Schema) -> dict[str, Any]:
    """Every row's bookkeeping (items and session rows, and items' handoff requests), read
    consistently."""
    return {
        "TableName": schema.table_name,
        "ProjectionExpression": "#k, #l, #u, #t, #d, #s, #su, #h, #hu",
        "ExpressionAttributeNames": schema.names(
            KEY, LESSEE, UNTIL, TOKEN, DURATION, SESSION, SESSION_UNTIL, HANDOFF, HANDOFF_UNTIL
        ),
        "ConsistentRead": True,
    }
