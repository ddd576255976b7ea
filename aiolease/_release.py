"""The freeing writes: a holder's release, and an operator's forced release of a stuck item.

Both free the row only in the tenure they name (lessee and token), keep the row, its token
and the user's attributes, and reconcile a lost answer by reading the row back.
"""

from __future__ import annotations

from ._errors import LeaseNotObtainedError, LeaseUnavailableError
from ._table import Table
from ._types import Lease, LeaseItem, refuse_session_row
from ._wire import requests, rows

__all__ = ["force_release", "release"]

# force_release() without expect reads, then frees conditioned on what it read: this many
# tries if the row keeps changing in between.
FORCE_RELEASE_ATTEMPTS = 3
# Why a session row is never released as an item: freed, Go workers would lease it as an
# item and takers would judge the session dead while its holder still works.
FORCE_SESSION = (
    "end the session instead (its holder's end_session(); once expired, any taker ends it)"
)


async def release(table: Table, lease: Lease) -> bool | None:
    """Free the row if ``lease`` still holds it; whether it did, ``None`` if undecidable.

    ``None``: an attempt's answer was lost and a retry found the row held by a newer holder,
    who may have taken it after our lost release freed it, or from us before it.
    """
    if lease._session is None:
        refuse_session_row(lease.lease_id, "end it with end_session()")
    try:
        return await _release(table, lease)
    finally:
        if lease._session is not None:
            table.session_claims.discard((lease._session, lease.lease_id))


async def _release(table: Table, lease: Lease) -> bool | None:
    schema = table.schema
    request = requests.release(schema, lease.lease_id, lease.lessee_id, lease.fencing_token)
    failed = await table.update(request, lease.lease_id)
    if failed is not None:
        # Ambiguous: a retry (ours, or botocore's own) after an attempt whose answer was
        # lost, which may have freed the row already.
        if not failed.retried:
            return False
        old = await table.refused_row(failed, lease.lease_id)
        if old is None:
            return False
        # If that attempt freed the row, the row is free under our token now; a newer holder
        # may have taken it after our lost release, or from us before it.
        token = rows.number(schema, old, schema.token_attribute, strict=False)
        if schema.lessee_attribute not in old:
            return token == lease.fencing_token
        return None if token > lease.fencing_token else False
    return True


async def force_release(table: Table, lease_id: str, expect: LeaseItem | None) -> LeaseItem | None:
    """Free a held row in the state read (``expect``, or read here); the row as it was before."""
    refuse_session_row(lease_id, FORCE_SESSION)
    schema = table.schema
    for _ in range(FORCE_RELEASE_ATTEMPTS):
        current = expect
        if current is None:
            current = await table.get_item(lease_id, consistent_read=True, projection_only=False)
        if current is None or current.lessee_id is None:
            return current
        request = requests.release(schema, lease_id, current.lessee_id, current.fencing_token)
        failed = await table.update(request, lease_id)
        if failed is not None:
            row = await table.refused_row(failed, lease_id)
            if row is None:
                return None
            if not rows.leasable(schema, row):
                # Its token (read as 0) can never match: not a row that "kept changing".
                raise rows.malformed_error(schema, lease_id, row)
            if (
                failed.retried
                and schema.lessee_attribute not in row
                and rows.number(schema, row, schema.token_attribute, strict=False)
                == current.fencing_token
            ):
                break  # freed by our own attempt whose answer was lost
            if expect is not None:
                raise LeaseNotObtainedError(
                    f"{lease_id!r} changed since it was read (held by "
                    f"{current.lessee_id!r}, token {current.fencing_token}): it is now "
                    f"{table.describe_row(row)}; not released",
                    lease_id=lease_id,
                    holder=rows.string(row, schema.lessee_attribute),
                )
            continue  # changed between the read and the write: read it again
        break
    else:
        raise LeaseUnavailableError(
            f"{lease_id!r} in table {schema.table_name!r} kept changing; not released",
            lease_id=lease_id,
        )
    return current
