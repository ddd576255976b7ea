"""AWS session helpers shared by the programs (the ``aiolease`` CLI and the demo).

Which ``aioboto3.Session`` an operator's options ask for. When a local server needs
throwaway credentials is the library's rule (``aiolease._connect``), re-exported here.
The library itself never uses this module.
"""

from __future__ import annotations

from typing import Any

from aiolease import LeaseStoreError
from aiolease._connect import fake_session, has_credentials, is_loopback, wants_fake_credentials

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
        return fake_session()
    return None
