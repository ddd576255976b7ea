"""The ``aiolease`` command: the embedded demo, a local server and the operator commands.

Every command prints one-line errors (``aiolease: error: ...``) and returns an exit code that
scripts can rely on (see :data:`EPILOG`). DynamoDB is only reached through :class:`LockStore`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from aiolease import LeaseError, LeaseStoreError, LeaseUnavailableError

from ._exit import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
    Failed,
    UsageError,
)
from ._parser import EPILOG, build_parser

__all__ = ["EPILOG", "EXIT_FAILED", "EXIT_OK", "EXIT_STORE", "EXIT_USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see :data:`EPILOG`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(args.run(args))
    except UsageError as exc:
        # The command's own usage line, not the top level's: that is what was mistyped.
        getattr(args, "command_parser", parser).error(str(exc))  # exits with EXIT_USAGE
    except Failed as exc:
        _error(str(exc))
        return EXIT_FAILED
    except (LeaseStoreError, LeaseUnavailableError) as exc:
        message = str(exc)
        if "does not exist" in message:
            message += " (aiolease create-table makes it)"
        _error(message)
        return EXIT_STORE
    except LeaseError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`, which has gone: not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return int(result) if isinstance(result, int) else EXIT_OK


def _error(message: str) -> None:
    print(f"aiolease: error: {' '.join(message.split())}", file=sys.stderr)
