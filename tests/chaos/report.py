"""Print the chaos suite's last figures as the Markdown table of docs/reliability.md.

``python -m tests.chaos.report [chaos-results/chaos.jsonl]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .harness import RESULTS_FILE


def _pairs(mapping: dict[str, object]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in mapping.items()) or "none"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else RESULTS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(
        "| scenario | s | holds checked | items | handovers | overlaps | faults injected "
        "| leases lost (why) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['seconds']} | {row['holds_checked']} | {row['items']} "
            f"| {row['handovers']} | {row['overlaps']} | {_pairs(row['faults_injected'])} "
            f"| {_pairs(row['leases_lost'])} |"
        )
    totals = {k: sum(r[k] for r in rows) for k in ("holds_checked", "handovers", "overlaps")}
    faults = sum(sum(r["faults_injected"].values()) for r in rows)
    print(
        f"\nTotal: {totals['holds_checked']} holds checked, {totals['handovers']} handovers, "
        f"{totals['overlaps']} overlaps, {faults} faults injected."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
