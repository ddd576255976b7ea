"""Opening a DynamoDB client configured for leases (``LockStore.connect``).

Also when a local server gets throwaway credentials: moto and DynamoDB Local on this
machine accept any, and botocore refuses to sign a request without some.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

from ._errors import LeaseStoreError

__all__ = [
    "FAKE_CREDENTIALS",
    "fake_session",
    "has_credentials",
    "is_loopback",
    "lease_client",
    "wants_fake_credentials",
]

FAKE_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}
"""Throwaway credentials and region for a local server: moto accepts any, and with these
botocore does not go looking for real ones."""


def fake_session() -> Any:
    """An ``aioboto3.Session`` with throwaway credentials, for a local server."""
    import aioboto3

    return aioboto3.Session(
        aws_access_key_id=FAKE_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=FAKE_CREDENTIALS["aws_secret_access_key"],
        region_name=FAKE_CREDENTIALS["region_name"],
    )


def wants_fake_credentials(*, profile: str | None, endpoint_url: str | None) -> bool:
    """Whether to hand out throwaway credentials: a loopback endpoint, and none configured."""
    return not profile and is_loopback(endpoint_url) and not has_credentials()


def is_loopback(url: str | None) -> bool:
    """Whether ``url`` names this machine (``localhost``, ``127.x.x.x`` or ``::1``)."""
    if not url:
        return False
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # a malformed URL: botocore reports it when the client is made
        return False
    return host in ("localhost", "::1") or host.startswith("127.")


def has_credentials() -> bool:
    """Whether botocore finds credentials without asking the EC2/ECS metadata services."""
    import botocore.exceptions as bce
    import botocore.session

    try:
        session = botocore.session.get_session()
        resolver = session.get_component("credential_provider")
        for name in ("iam-role", "container-role"):
            with suppress(ValueError):
                resolver.remove(name)
        return session.get_credentials() is not None
    except bce.ProfileNotFound:
        # A profile was asked for (AWS_PROFILE): never hide it behind throwaway credentials;
        # opening the client reports it.
        return True
    except bce.BotoCoreError:
        return False


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

    The store and the locker retry themselves within the lease's deadline. A loopback
    endpoint with no credentials configured gets throwaway ones (:data:`FAKE_CREDENTIALS`).
    A missing region or a malformed endpoint is a :class:`LeaseStoreError` naming the table.
    Per request it skips what a lease library does not need (docs/performance.md, "Hot
    path"): botocore's parameter validation (the store builds every request itself, and the
    server validates anyway) and the rebuilding of the User-Agent string (a fixed one).
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
    # The credential lookup reads files (and may run a credential_process): off the loop.
    if (
        session is None
        and is_loopback(endpoint_url)
        and not await asyncio.to_thread(has_credentials)
    ):
        session = fake_session()
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
