"""Tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck`` (all three run in CI)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite against an embedded moto server (started by the fixtures)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "aiolease")


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The chaos scenarios in their long form, for nightly runs (not part of CI)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/chaos", "--soak", "-s", *session.posargs)
