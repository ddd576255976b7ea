"""Opening a DynamoDB client configured for leases (``LockStore.connect``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._errors import LeaseStoreError

__all__ = ["lease_client"]


@asynccontextmanager
async def lease_client(
    table_name: str,
    hash_key: str,
    *,
    endpoint_url: str | None,
    region_name: str | None,
    session: Any,
    connect_timeout: float,
    read_timeout: float,
    max_pool_connections: int,
) -> AsyncIterator[Any]:
    """An aiobotocore DynamoDB client with botocore's retries off and short timeouts.

    The store and the locker retry themselves within the lease's deadline. A missing
    region or a malformed endpoint is a :class:`LeaseStoreError` naming the table. Per
    request it skips what a lease library does not need (docs/performance.md, "Hot path"):
    botocore's parameter validation (the store builds every request itself, and the server
    validates anyway) and the rebuilding of the User-Agent string (a fixed one instead).
    """
    import aioboto3
    import botocore.exceptions as bce
    from aiobotocore.config import AioConfig

    config = AioConfig(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        parameter_validation=False,
        user_agent=_user_agent(),
    )
    try:
        if session is None:
            session = aioboto3.Session()
        if region_name is None and session.region_name is None and endpoint_url is not None:
            # A local endpoint does not care about the region, but botocore insists on one.
            region_name = "us-east-1"
        client_cm = session.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config
        )
        client = await client_cm.__aenter__()
    except bce.NoRegionError as exc:
        raise LeaseStoreError(
            "no AWS region configured: pass region_name= or set AWS_DEFAULT_REGION",
            table=table_name,
            hash_key=hash_key,
        ) from exc
    except (ValueError, bce.BotoCoreError) as exc:  # a malformed endpoint_url, no profile
        raise LeaseStoreError(
            f"cannot open a DynamoDB client: {exc}", table=table_name, hash_key=hash_key
        ) from exc
    try:
        yield client
    finally:
        await client_cm.__aexit__(None, None, None)


def _user_agent() -> str:
    """A fixed User-Agent: botocore's default is rebuilt (twice) for every request."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("aiolease", "aiobotocore", "botocore"):
        try:
            parts.append(f"{name}/{version(name)}")
        except PackageNotFoundError:  # run from a source tree without installing
            parts.append(name)
    return " ".join(parts)
