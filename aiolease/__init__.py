"""aiolease: asyncio leases on DynamoDB.

Obtain an item, keep it alive with heartbeats in a background task, and stop touching it
the moment the lease may be lost::

    async with LockStore.connect("leases") as store:
        locker = Locker(store)
        async with locker.lease(LeaseRequest("worker-1", 30)) as lease:
            ...  # cancelled, and LeaseLostError raised, if the lease is lost
"""

from ._balance import draining
from ._errors import (
    LeaseError,
    LeaseLostError,
    LeaseNotObtainedError,
    LeaseStoreError,
    LeaseUnavailableError,
)
from ._events import (
    EventStream,
    LeaseAcquired,
    LeaseAtRisk,
    LeaseEvent,
    LeaseLost,
    LeaseReleased,
    LeaseRenewed,
    LeaseTakenOver,
    RenewalFailed,
    SessionEnded,
    SessionEvent,
    SessionLost,
    SessionRenewed,
    SessionStarted,
)
from ._events_handoff import (
    HandoffAccepted,
    HandoffCompleted,
    HandoffEvent,
    HandoffRequested,
    HandoffWithdrawn,
)
from ._global import global_lock_store, setup_lock_store_global
from ._locker import LeaseScope, LeaseSession, Locker
from ._log import set_logger
from ._store import LockStore
from ._types import Holder, Lease, LeaseItem, LeaseRequest

__version__ = "0.1.0"

__all__ = [
    "EventStream",
    "HandoffAccepted",
    "HandoffCompleted",
    "HandoffEvent",
    "HandoffRequested",
    "HandoffWithdrawn",
    "Holder",
    "Lease",
    "LeaseAcquired",
    "LeaseAtRisk",
    "LeaseError",
    "LeaseEvent",
    "LeaseItem",
    "LeaseLost",
    "LeaseLostError",
    "LeaseNotObtainedError",
    "LeaseReleased",
    "LeaseRenewed",
    "LeaseRequest",
    "LeaseScope",
    "LeaseSession",
    "LeaseStoreError",
    "LeaseTakenOver",
    "LeaseUnavailableError",
    "LockStore",
    "Locker",
    "RenewalFailed",
    "SessionEnded",
    "SessionEvent",
    "SessionLost",
    "SessionRenewed",
    "SessionStarted",
    "draining",
    "global_lock_store",
    "set_logger",
    "setup_lock_store_global",
]
