"""AWS session helpers shared by the programs (the ``aiolease`` CLI and the demo).

Which ``aioboto3.Session`` an operator's options ask for, and when a local server needs
throwaway credentials. The library itself never uses this module.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from aiolease import LeaseStoreError

__all__ = ["has_credentials", "is_loopback", "make_session", "wants_fake_credentials"]


def make_session(
    *, profile: str | None, endpoint_url: str | None, table: str | None, hash_key: str
) -> Any:
    """The ``aioboto3.Session`` the options ask for, or ``None`` for the default one.

    A loopback endpoint (moto, DynamoDB Local) with no credentials configured gets
    throwaway ones: such servers accept anything, and botocore would refuse to sign.
    Raises :class:`LeaseStoreError` (naming ``table``) for an unknown ``profile``.
    """
    import aioboto3
    import botocore.exceptions as bce

    if profile:
        try:
            return aioboto3.Session(profile_name=profile)
        except bce.ProfileNotFound as exc:
            raise LeaseStoreError(str(exc), table=table, hash_key=hash_key) from None
    if wants_fake_credentials(profile=None, endpoint_url=endpoint_url):
        from aiolease.testing import fake_session

        return fake_session()
    return None


def wants_fake_credentials(*, profile: str | None, endpoint_url: str | None) -> bool:
    """Whether to hand out throwaway credentials: a loopback endpoint, and none configured."""
    return not profile and is_loopback(endpoint_url) and not has_credentials()


def is_loopback(url: str | None) -> bool:
    """Whether ``url`` names this machine (``localhost``, ``127.x.x.x`` or ``::1``)."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def has_credentials() -> bool:
    """Whether botocore finds credentials without asking the EC2/ECS metadata services."""
    import botocore.exceptions as bce
    import botocore.session

    session = botocore.session.get_session()
    resolver = session.get_component("credential_provider")
    for name in ("iam-role", "container-role"):
        with suppress(ValueError):
            resolver.remove(name)
    try:
        return session.get_credentials() is not None
    except bce.BotoCoreError:
        return False
