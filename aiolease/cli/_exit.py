"""The CLI's exit codes, and the two outcomes a command raises to choose one."""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "Failed",
    "UsageError",
]

EXIT_OK = 0
#: The operation did not happen or did not pass (no such item, refused, exclusion check failed).
EXIT_FAILED = 1
#: Bad arguments (argparse's own code), or a missing optional dependency.
EXIT_USAGE = 2
#: The table, the credentials or the endpoint cannot be used; retrying as is will not help.
EXIT_STORE = 3
#: Ctrl-C, as a shell reports it (128 + SIGINT).
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input found after parsing: reported like an argparse error, exit code 2."""


class Failed(Exception):
    """The operation did not happen: exit code 1."""
