"""The library's layout (docs/architecture.md): imports run one way, modules stay small.

Read from the source, without importing it: every import of one aiolease module by another
(but those only for type checking) must go to a lower layer, or to an earlier module of
its own layer, so that the import graph has no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiolease"

# The library's layers, lowest first; within a layer, a module imports only those before it.
LAYERS: list[list[str]] = [
    # values, errors, logging, time; metrics and lifecycle events
    [
        "_types",
        "_errors",
        "_log",
        "_clock",
        "_observe",
        "_metrics",
        "_listeners",
        "_events",
        "_events_handoff",
    ],
    ["_tasks"],  # the owner of background work
    # The wire: names, requests, parsing, error codes, the call engine.
    [
        "_wire",
        "_wire.schema",
        "_wire.codes",
        "_wire.requests",
        "_wire.sessions",
        "_wire.pool",
        "_wire.rows",
        "_wire.handoff",
        "_wire.calls",
    ],
    ["_stamps", "_table", "_layout"],  # one table: its reads; the table layouts
    # The rules' writes (and the session rows').
    ["_acquire", "_renew", "_release", "_admin", "_connect", "_sessions_store"],
    ["_store", "_global"],  # LockStore
    ["_sessions_take", "_takeover"],  # judging sessions' items; the takeover rules
    # time and tasks: keeper, scopes, balancing, sessions, locker
    ["_heartbeat", "_scope", "_shares", "_handoff", "_balance", "_session", "_locker"],
    [
        "",
        "testing._server",
        "testing",
        "testing.history",
        "testing.pytest_plugin",
    ],  # the package, the test kit
]
RANK = {name: (layer, i) for layer, names in enumerate(LAYERS) for i, name in enumerate(names)}
# Modules the programs' restructuring owns (the CLI and the demo); not layered here.
PROGRAMS = ("_cli", "_demo", "__main__", "_aws", "cli", "demo")

# Over these, a module or a class must say in docs/architecture.md why it cannot be split.
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {n: p for n, p in found.items() if n.split(".")[0] not in PROGRAMS}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path) -> set[str]:
    """The aiolease modules ``name`` imports at run time (at module level or in functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join([*base, *([child.module] if child.module else [])])
                elif child.module and child.module.startswith("aiolease"):
                    target = child.module.removeprefix("aiolease").lstrip(".")
                else:
                    continue
                if child.module:  # not "from . import _admin", which imports only _admin
                    found.add(target)
                for alias in child.names:  # "from . import _admin" imports a module
                    sub = f"{target}.{alias.name}" if target else alias.name
                    if sub in RANK or sub.split(".")[0] in PROGRAMS:
                        found.add(sub)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("aiolease."):
                        found.add(alias.name.removeprefix("aiolease."))
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def test_every_library_module_has_a_layer() -> None:
    assert set(library_modules()) == set(RANK), "add the module to LAYERS (and the docs' map)"


@pytest.mark.parametrize("name", sorted(RANK))
def test_imports_run_down_the_layers(name: str) -> None:
    path = library_modules()[name]
    for target in sorted(imports_of(name, path)):
        assert target.split(".")[0] not in PROGRAMS, f"{name} imports the program {target}"
        assert target in RANK, f"{name} imports {target!r}, which has no layer"
        assert RANK[target] < RANK[name], (
            f"{name} (layer {RANK[name]}) imports {target} (layer {RANK[target]}): "
            "imports must run down the layers"
        )


@pytest.mark.parametrize("name", sorted(RANK))
def test_modules_and_classes_stay_small(name: str) -> None:
    path = library_modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name} has over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{name}.{node.name} has {size} lines"


def test_the_lowest_layers_import_on_their_own() -> None:
    """Each module of the wire and below imports first in a fresh interpreter (no cycle)."""
    low = [n for n, (layer, _) in RANK.items() if layer <= 3 and n]
    script = "import importlib, sys\n" + "".join(
        f"importlib.import_module('aiolease.{n}'); " for n in low
    )
    # One interpreter per module would take seconds; instead import each one first in its
    # own interpreter only for the modules whose import order matters: the wire's.
    for name in [n for n in low if n.startswith("_wire")]:
        code = f"import importlib; importlib.import_module('aiolease.{name}')"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=PACKAGE.parent)


class _NoClient:
    update_item = None


async def test_a_takeover_rule_of_ones_own_plugs_into_the_locker() -> None:
    """A third rule (sessions, say) needs no change to the locker or the other rules."""
    from datetime import UTC, datetime

    from aiolease import Lease, LeaseRequest, Locker, LockStore

    class FirstComeRule:
        name = "first-come"
        max_clock_skew = 0.5

        def __init__(self) -> None:
            self.asked: list[str | None] = []

        async def obtain_any(self, store: LockStore, request: LeaseRequest) -> Lease:
            self.asked.append(None)
            return Lease("a", request, datetime.now(UTC), 1)

        async def obtain_named(
            self, store: LockStore, request: LeaseRequest, lease_id: str
        ) -> Lease:
            self.asked.append(lease_id)
            return Lease(lease_id, request, datetime.now(UTC), 1)

        def ripens_in(self, now: float) -> float | None:
            return None

    rule = FirstComeRule()
    locker = Locker(LockStore(_NoClient(), "leases"), takeover=rule)  # type: ignore[arg-type]
    assert (locker.takeover, locker.max_clock_skew) == ("first-come", 0.5)
    assert (await locker.obtain_lease(LeaseRequest("w", 2))).lease_id == "a"
    assert rule.asked == [None]
    with pytest.raises(ValueError, match="takeover"):
        Locker(LockStore(_NoClient(), "leases"), takeover="sessions")  # type: ignore[arg-type]
