"""Tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s docs`` (all in CI).

``nox -s bench`` (not run by default) runs the benchmark suite; see docs/performance.md.
``nox -s model`` checks the protocol model with SPIN (``-- --mutants``: the broken variants);
see docs/protocol.md.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
# Every version requires-python promises; the first also runs the chaos scenarios.
PYTHONS = ["3.11", "3.12", "3.13"]

# pyenv installs interpreters without putting python3.12 and python3.13 on PATH: let nox
# find them there too.
_pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
for _bin in sorted(glob.glob(os.path.join(_pyenv_root, "versions", "3.1[1-9]*", "bin"))):
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _bin


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite against an embedded moto server (started by the fixtures).

    The chaos scenarios run on the first version only: they test the protocol, not the
    interpreter, and take minutes.
    """
    session.install("-e", ".[test]")
    args = list(session.posargs)
    if session.python != PYTHONS[0] and not args:
        args = ["--ignore=tests/chaos"]
    session.run("pytest", *args)


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
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors; ``nox -s docs -- serve`` to preview."""
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about MkDocs 2
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against the floor and the peers: figures, not pass/fail (``-- --quick``)."""
    session.install("-e", ".[test]", "python-dynamodb-lock", "matplotlib")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The chaos scenarios in their long form, for nightly runs (not part of CI)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/chaos", "--soak", "-s", *session.posargs)


@nox.session(python=PYTHON, venv_backend="none")
def model(session: nox.Session) -> None:
    """The SPIN model of the lease protocol, checked exhaustively (``-- --mutants``)."""
    missing = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
    if missing:
        session.error(
            f"{' and '.join(missing)} not on PATH: the model check needs the SPIN model "
            "checker and a C compiler (Debian: apt-get install -y spin gcc)"
        )
    session.run(sys.executable, "model/run.py", *session.posargs, external=True)
