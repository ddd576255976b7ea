"""Logging: route aiolease's records to your logger and print the lease fields they carry.

Every record about a lease has ``lease_id``, ``lessee_id`` and ``fencing_token`` in its
``extra`` (attributes of the ``LogRecord``). Runs against ``AIOLEASE_ENDPOINT_URL`` if set,
else against an embedded moto server.
"""

import asyncio
import logging
import sys

import aiolease
from aiolease import LeaseRequest, Locker, LockStore


# --8<-- [start:logging]
class LeaseFields(logging.Filter):
    """Give every record the lease fields, so that a format string can use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("lease_id", "lessee_id", "fencing_token"):
            if not hasattr(record, name):
                setattr(record, name, "-")  # records that are not about one lease
        return True


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(LeaseFields())
    handler.setFormatter(
        logging.Formatter(
            "%(levelname)s %(name)s lease=%(lease_id)s lessee=%(lessee_id)s "
            "token=%(fencing_token)s: %(message)s"
        )
    )
    logger = logging.getLogger("myapp.leases")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # DEBUG also logs every renewal
    aiolease.set_logger(logger)  # default: logging.getLogger("aiolease"), no handler
    # --8<-- [end:logging]


async def main(endpoint_url: str | None = None) -> None:
    setup_logging()
    try:
        async with LockStore.connect("logging", endpoint_url=endpoint_url) as store:
            await store.create_table()
            await store.add_item("shard-1")
            locker = Locker(store, max_clock_skew=0.5)
            async with locker.lease(LeaseRequest("worker-1", duration=3)):
                await asyncio.sleep(0.1)
    finally:
        aiolease.set_logger(logging.getLogger("aiolease"))  # back to the default


if __name__ == "__main__":
    from aiolease.testing import run_with_dynamodb

    run_with_dynamodb(main)
