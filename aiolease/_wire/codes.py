"""DynamoDB's error codes, mapped to the library's errors: what is transient, what is not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import LeaseStoreError
from .schema import Schema

__all__ = [
    "Expected",
    "client_attempts",
    "error_code",
    "is_missing_index",
    "is_transient",
    "short",
    "store_error",
]

# Error codes that say "try again": the request was refused or failed on the server side.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "LimitExceededException",
    }
)
# Error codes that no retry will fix: credentials or permissions.
ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)
CONDITION_FAILED = "ConditionalCheckFailedException"


class Expected(Exception):
    """An anticipated error code (usually a failed condition), with the row DynamoDB returned.

    ``retried``: botocore resent the request by itself, so the refusal may be of our own
    write. ``item`` is None when there is no row, or when the server ignores
    ``ReturnValuesOnConditionCheckFailure`` (the caller reads the row instead).
    """

    def __init__(self, code: str, item: dict[str, Any] | None, *, retried: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.item = item
        self.retried = retried

    @classmethod
    def of(cls, code: str, exc: BaseException) -> Expected:
        """The anticipated ``code`` that ``exc`` carries, with its ``ALL_OLD`` item."""
        response = getattr(exc, "response", {})
        # RetryAttempts > 0: botocore resent the request itself, so an earlier copy may have
        # landed (the refusal may be of our own write).
        meta = response.get("ResponseMetadata") or {}
        retried = bool(meta.get("RetryAttempts")) if isinstance(meta, Mapping) else False
        return cls(code, response.get("Item"), retried=retried)


def error_code(exc: BaseException) -> str | None:
    """The DynamoDB error code of a botocore ``ClientError``; None for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            code = error.get("Code")
            return str(code) if code is not None else None
    return None


def _http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        if isinstance(meta, Mapping):
            return int(meta.get("HTTPStatusCode") or 0)
    return 0


def is_transient(exc: BaseException) -> bool:
    """True for errors that may go away on retry (throttling, 5xx, timeouts, connections)."""
    import botocore.exceptions as bce

    code = error_code(exc)
    if code is not None:
        return code in TRANSIENT_CODES or _http_status(exc) >= 500
    if isinstance(exc, bce.NoCredentialsError | bce.NoRegionError | bce.ParamValidationError):
        return False
    # Connection refused/reset, read and connect timeouts: botocore wraps them in
    # HTTPClientError subclasses; raw aiohttp/OS errors can surface too.
    return isinstance(exc, bce.HTTPClientError | bce.ConnectionError | OSError | TimeoutError) or (
        type(exc).__module__.startswith("aiohttp")
    )


def is_missing_index(exc: BaseException | None) -> bool:
    """True for the answer to a query on an index that is absent or still building.

    DynamoDB says ``ValidationException``; moto says ``ResourceNotFoundException``.
    """
    if exc is None or error_code(exc) not in ("ValidationException", "ResourceNotFoundException"):
        return False
    return "index" in short(exc).lower()


def store_error(schema: Schema, exc: BaseException, lease_id: str | None) -> LeaseStoreError:
    """A non-transient failure as a :class:`LeaseStoreError` naming the table and key."""
    import botocore.exceptions as bce

    code = error_code(exc)
    where = schema.where()
    if code == "ResourceNotFoundException":
        message = f"{where} does not exist; create it with LockStore.create_table()"
    elif code in ACCESS_CODES:
        message = f"access to {where} denied: {short(exc)}"
    elif code == "ValidationException" and "key element does not match" in str(exc):
        message = (
            f"{where}: the table's key schema is not a single string hash key named "
            f"{schema.hash_key!r}"
        )
    elif isinstance(exc, bce.NoCredentialsError):
        message = (
            f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or pass session="
        )
    elif code is not None:
        message = f"{where}: {code}: {short(exc)}"
    else:
        message = f"{where}: {type(exc).__name__}: {exc}"
    if lease_id is not None:
        message += f" [lease {lease_id!r}]"
    return LeaseStoreError(
        message, table=schema.table_name, hash_key=schema.hash_key, lease_id=lease_id
    )


def short(exc: BaseException) -> str:
    """One line about an error, for messages and logs: never a request body or an HTML page."""
    code = error_code(exc)
    if code is not None:
        error = getattr(exc, "response", {}).get("Error", {})
        text = f"{code}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def client_attempts(client: Any) -> int:
    """How many attempts the client makes per call by itself (botocore's retry config)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    retries = getattr(config, "retries", None)
    if config is None or not isinstance(retries, Mapping):
        return 1  # not a botocore client (a test double): nothing to say
    total = retries.get("total_max_attempts")
    if isinstance(total, int):
        return total
    legacy = retries.get("max_attempts")  # the legacy key counts retries, not attempts
    if isinstance(legacy, int):
        return legacy + 1
    # botocore's defaults: 10 attempts for DynamoDB in legacy mode, 3 in standard mode.
    return 3 if retries.get("mode") in ("standard", "adaptive") else 10
