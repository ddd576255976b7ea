"""The documentation's examples run against the moto server, so the docs cannot rot.

Every file under docs/examples/ is run here: the ``main(endpoint_url)`` examples
in-process, the rest (signals, pytest, the CLI) in a subprocess. The pages include these
files with ``--8<--``; the README's "Use it" block is a verbatim copy of a section of one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError

import aiolease
import aiolease.testing
from aiolease import Lease, LeaseRequest, Locker, LockStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
TIMEOUT = 60.0  # seconds; each example takes a few

# Examples with a ``main(endpoint_url)`` coroutine, and lines each must print.
PRINTS: dict[str, list[str]] = {
    "quickstart.py": [f"worker-{n} released shard-" for n in range(3)],
    "first_lease.py": [
        "processing shard-7 with fencing token 1",
        "released shard-7; attributes were {'region': 'eu-west-1'}",
    ],
    "worker_pool.py": ["did shard-"],
    "leader_election.py": [
        *(f"leads, term {term}" for term in (1, 2, 3)),
        *(f"node-{n} steps down" for n in range(3)),
    ],
    "leader_watch.py": [
        "now node-1 leads, term 1",
        "nobody leads",
        "now node-2 leads, term 2",
    ],
    "scope_state.py": [
        "expiry moved with the renewals: True",
        "the next step fits under token 1",
    ],
    "taskgroup_services.py": [
        "consumed message 2 from queue-1",
        "reported progress of queue-1",
        "released queue-1",
    ],
    "fencing_write.py": [
        "A writes with token 1: accepted",
        "B writes with token 2: accepted",
        "A wakes up, writes with token 1: refused",
    ],
    "fencing_transaction.py": [
        "A wrote its result under token 1",
        "B took shard-1 over with token 2",
        "A's late write was refused",
    ],
    "logging_setup.py": [
        "INFO myapp.leases lease=shard-1 lessee=worker-1 token=1: acquired",
        "INFO myapp.leases lease=shard-1 lessee=worker-1 token=1: released",
    ],
    "indexed_layout.py": [
        "obtained shard-7 through the index",
        "backfilled 1 row(s)",
        "then obtained shard-8 through the index",
        "the hand-made table has the right index",
    ],
    "takeover_modes.py": ["observer took shard-1 after"],
    "observability.py": [
        "event LeaseAcquired: shard-1 token 1",
        "event LeaseRenewed: shard-1 token 1",
        "event LeaseReleased: shard-1 token 1",
        "metric aiolease.acquisitions {'aiolease.table': 'observed', 'aiolease.takeover': False} 1",
        "metric aiolease.leases.held {'aiolease.table': 'observed'} 0 {lease}",
        "metric aiolease.renewals {'aiolease.table': 'observed', 'aiolease.outcome': 'renewed'} 1",
    ],
    "alert_on_losses.py": [
        "ALERT: worker-1 lost shard-1 (released by another)",
        "worker-1 stopped: released by another",
    ],
    "sessions.py": [
        "worker-1 took shard-2 under its session",
        "processed shard-1 (token 1)",
        "again: shard-0 (token 2)",
        "session ended; every shard released",
        "items still held: 0",
    ],
    "fair_share.py": ["shards processed: 12 of 12"],
    "balancing.py": [
        "3 workers hold [4, 4, 4] shards",
        "4 workers hold [3, 3, 3, 3] shards",
    ],
    "pool_worker.py": ["worker-1 holds shard-", "worker-1 released shard-"],
    "go_shared_table.py": [
        "took shard-1 over from the Go worker: token 1",
        "shard-1: free=True token=1",
    ],
}
# Examples that need a process of their own, each with its test below.
RUN_APART = {
    "graceful_shutdown.py",
    "test_my_worker.py",
    "cli.sh",
    "iam-policy.json",
    "local_processes.sh",
}


def load(name: str) -> ModuleType:
    """Import docs/examples/<name> as a module of its own."""
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_env(endpoint: str) -> dict[str, str]:
    """The environment for an example in a subprocess: the test server and its credentials."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "AIOLEASE_ENDPOINT_URL": endpoint, "PATH": path}


def section(path: Path, name: str) -> str:
    """The lines between ``--8<-- [start:name]`` and ``--8<-- [end:name]`` in ``path``."""
    text = path.read_text()
    start, end = rf"^[^\n]*--8<-- \[start:{name}\][^\n]*\n", rf"^[^\n]*--8<-- \[end:{name}\]"
    match = re.search(f"{start}(.*?){end}", text, re.M | re.S)
    assert match, f"{path.name} has no section {name!r}"
    return match.group(1)


def test_every_example_file_is_run_by_a_test() -> None:
    files = {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    assert files == set(PRINTS) | RUN_APART, (
        "add the new example to PRINTS (a main(endpoint_url) coroutine) or give it a test"
    )


@pytest.mark.parametrize("name", sorted(PRINTS))
async def test_example_runs_and_prints_what_the_docs_say(
    name: str, dynamodb_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load(name)
    try:
        await asyncio.wait_for(module.main(dynamodb_endpoint), TIMEOUT)
    except ClientError as exc:
        # Not every DynamoDB-compatible server has transactions (dynalite has none).
        if exc.response.get("Error", {}).get("Code") == "UnknownOperationException":
            pytest.skip(f"{name}: the server does not support {exc.operation_name}")
        raise
    out = capsys.readouterr().out
    for line in PRINTS[name]:
        assert line in out, f"{name} did not print {line!r}; it printed:\n{out}"


async def test_graceful_shutdown_releases_the_lease_on_sigterm(dynamodb_endpoint: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "graceful_shutdown.py"),
        env=example_env(dynamodb_endpoint),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        assert first.decode().strip() == "holding shard-1"
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "released shard-1" in out.decode()
    async with LockStore.connect("shutdown", endpoint_url=dynamodb_endpoint) as store:
        items = [item async for item in store.scan()]
    assert [(i.lease_id, i.lessee_id) for i in items] == [("shard-1", None)], (
        "SIGTERM left the item held instead of releasing it"
    )


def test_the_testing_recipe_passes_under_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_worker.py"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("aiolease.__main__") is None, reason="the CLI is not built yet"
)
async def test_the_cli_commands_of_the_operations_page_work(dynamodb_endpoint: str) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", str(EXAMPLES / "cli.sh")],
        env=example_env(dynamodb_endpoint),
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    async with LockStore.connect("my-leases", endpoint_url=dynamodb_endpoint) as store:
        items = {item.lease_id: item async for item in store.scan()}
    assert sorted(items) == ["shard-1", "shard-2"]
    assert items["shard-1"].attributes == {"region": "eu-west-1"}


def test_several_processes_share_one_aiolease_server(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the script's server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A machine with no AWS configuration at all: the loopback server needs none.
    env = {k: v for k, v in example_env("unused").items() if not k.startswith(("AWS_", "AIO"))}
    none = str(tmp_path / "none")
    env.update(PORT=str(port), AWS_SHARED_CREDENTIALS_FILE=none, AWS_CONFIG_FILE=none)
    result = subprocess.run(
        ["bash", str(EXAMPLES / "local_processes.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"export AIOLEASE_ENDPOINT_URL=http://127.0.0.1:{port}" in out, out
    held = sorted(re.findall(r"(worker-\d) holds (shard-\d), fencing token 1", out))
    assert sorted(item for _, item in held) == ["shard-1", "shard-2"], (
        f"each worker process should hold one item at once:\n{out}"
    )
    assert {worker for worker, _ in held} == {"worker-1", "worker-2"}, out
    assert "Traceback" not in result.stderr, result.stderr


async def test_the_iam_policy_allows_exactly_the_actions_the_library_uses(
    dynamodb_endpoint: str,
) -> None:
    policy = json.loads((EXAMPLES / "iam-policy.json").read_text())
    statements = {s["Sid"]: set(s["Action"]) for s in policy["Statement"]}
    workers = statements["LeaseWorkers"]
    called: list[str] = []

    def record(model: Any, **_: Any) -> None:
        called.append(f"dynamodb:{model.name}")

    async with LockStore.connect("iam-check", endpoint_url=dynamodb_endpoint) as store:
        store.client.meta.events.register("before-call.dynamodb", record)
        await store.create_table()
        creating = set(called)
        called.clear()
        await store.add_item("a")
        await store.add_item("b")
        locker = Locker(store, max_clock_skew=0.5)
        async with locker.lease(LeaseRequest("w", 3)) as lease:
            await store.renew(lease)
        named: Lease = await locker.obtain_lease(LeaseRequest("w2", 3))
        await store.release(named)
        await store.list_lease_ids()
        await store.force_release("a")
        await store.describe_table()
        working = set(called)
    assert working <= workers, f"workers call {working - workers}, which the policy does not allow"
    everything = creating | working
    allowed = set().union(*statements.values())
    assert everything == allowed, (
        f"policy allows {allowed - everything} needlessly, misses {everything - allowed}"
    )


def test_the_readme_example_is_the_tested_one() -> None:
    expected = section(EXAMPLES / "first_lease.py", "readme")
    assert "asyncio.run(main())" in expected, "the README's block must run as pasted"
    assert readme_block().rstrip() == expected.rstrip(), (
        "README's example differs from the readme section of docs/examples/first_lease.py"
    )


def readme_block() -> str:
    """The python block of the README's "Use it" section."""
    readme = (ROOT / "README.md").read_text()
    use_it = readme[readme.index("## Use it") :]
    block = re.search(r"```python\n(.*?)```", use_it, re.S)
    assert block, "README's 'Use it' section has no python block"
    return block.group(1)


async def test_the_readme_example_runs_as_pasted_against_a_local_server(tmp_path: Path) -> None:
    script = tmp_path / "first_lease.py"
    script.write_text(readme_block())
    # A server of its own: the session's already has the "leases" table of first_lease.py.
    async with aiolease.testing.local_dynamodb() as endpoint:
        # As a new user's shell has it: the endpoint `aiolease server` prints, no AWS settings.
        env = {k: v for k, v in example_env(endpoint).items() if not k.startswith("AWS_")}
        none = str(tmp_path / "none")
        env.update(AWS_SHARED_CREDENTIALS_FILE=none, AWS_CONFIG_FILE=none)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in PRINTS["first_lease.py"]:
        assert line in result.stdout, f"the README's block did not print {line!r}"


def test_every_code_block_in_the_docs_is_an_included_example() -> None:
    fence = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
    include = re.compile(r'^--8<-- "([^"]+)"$')
    for page in DOCS.glob("*.md"):
        for language, body in fence.findall(page.read_text()):
            if language in ("console", "text", "toml"):
                continue  # install commands and output: shown, not run
            lines = body.strip().splitlines()
            assert lines, f"{page.name}: empty {language} block"
            for line in lines:
                match = include.match(line.strip())
                assert match, (
                    f"{page.name}: a {language} block holds code; move it into a tested file "
                    'under docs/examples/ and include it with --8<-- "docs/examples/FILE:SECTION"'
                )
                target, _, name = match.group(1).partition(":")
                assert (ROOT / target).is_file(), f"{page.name}: {target} does not exist"
                if name:
                    section(ROOT / target, name)


def test_the_reference_documents_every_public_name() -> None:
    reference = (DOCS / "reference.md").read_text()
    documented = set(re.findall(r"^::: aiolease\.(\w+)", reference, re.M))
    missing = set(aiolease.__all__) - documented
    assert not missing, f"docs/reference.md lacks {sorted(missing)}"
    testing = reference[reference.index("::: aiolease.testing") :]
    missing = {name for name in aiolease.testing.__all__ if f"- {name}" not in testing}
    assert not missing, f"docs/reference.md lacks aiolease.testing's {sorted(missing)}"
