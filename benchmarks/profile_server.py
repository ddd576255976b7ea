"""Profile the moto server while one worker runs acquire+release pairs, or bare update pairs.

``python -m benchmarks.profile_server [aiolease|bare] [--seconds 12]`` (needs ``py-spy`` on
PATH and ptrace rights): samples the server process with py-spy and prints, for the server's
busy samples, the share spent in moto's expression parsing and in the UpdateItem handler.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from aiolease import LeaseRequest, LockStore
from aiolease.testing import MotoServer

from ._common import bare_update, open_client, set_fake_environment

_WATCH = (
    "DynamoHandler.update_item",
    "UpdateExpressionParser.make",
    "ConditionExpressionParser.parse",
    "Validator.validate",
)


async def _load(endpoint_url: str, kind: str, seconds: float) -> int:
    async with open_client(endpoint_url) as client:
        store = LockStore(client, f"profile-{kind}")
        await store.create_table()
        await store.add_item("a")
        request = LeaseRequest("profiler", 30)
        end, pairs = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            if kind == "aiolease":
                await store.release(await store.acquire("a", request))
            else:
                await bare_update(client, store.table_name, "a")
                await bare_update(client, store.table_name, "a")
            pairs += 1
        return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["aiolease", "bare"])
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    set_fake_environment()
    with tempfile.TemporaryDirectory() as tmp, MotoServer() as server:
        assert server.endpoint_url is not None and server._process is not None
        raw = Path(tmp) / "samples.txt"
        pid, seconds = str(server._process.pid), str(int(args.seconds))
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                pid,
                "-d",
                seconds,
                "-r",
                "200",
                "--nonblocking",
                "-f",
                "raw",
                "-o",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pairs = asyncio.run(_load(server.endpoint_url, args.kind, args.seconds))
        sampler.wait()
        busy, inside = 0, collections.Counter[str]()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "serialized.<locals>.wrapper" not in stack:
                continue  # a server thread waiting, not serving
            busy += int(count)
            for name in _WATCH:
                if name in stack:
                    inside[name] += int(count)
    print(f"{args.kind}: {pairs / args.seconds:.1f} pairs/s, {busy / pairs:.1f} busy samples/pair")
    for name in _WATCH:
        print(f"  {inside[name] / max(busy, 1):6.1%}  {name}")


if __name__ == "__main__":
    main()
