#!/usr/bin/env python3
"""Check the protocol models (model/lease.pml, model/session.pml) with SPIN; see
docs/protocol.md.

``python model/run.py`` runs every check and fails on any violation or on a search that
was cut short (depth, memory, an incomplete search). ``--mutants`` runs the broken
variants instead and fails unless the checker catches each one (with the property it
must violate), printing a one-line summary of each counterexample. Build artefacts go
to a temporary directory.
Standard library only; needs ``spin`` and ``gcc`` on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODEL = Path(__file__).resolve().parent / "lease.pml"
SESSION = Path(__file__).resolve().parent / "session.pml"

# Memory the verifier may use (MB); the search fails, rather than truncates, beyond it.
MEMLIM = 3500
# The search depth bound; a run that reaches it fails ("max search depth too small").
DEPTH = 20000

# Fine units per tick: the model's LeaseUntil is in these (see F in lease.pml).
FINE = 2


@dataclass
class Check:
    """One verifier run: a name, the model's -D settings, and what it is for."""

    name: str
    about: str
    defines: dict[str, object] = field(default_factory=dict)
    mutant: str | None = None  # the -D switch of a broken variant, which must be caught
    liveness: bool = False  # an LTL property under weak fairness instead of assertions
    model: Path = MODEL
    # what a mutant must violate: "S1" (an overlap of work, with every other assertion
    # switched off) or "S2" (a write landed on an ended session row / a take before the end)
    violates: str = "S1"


# The violated assertion's text, as pan prints it, for each property a mutant must break.
VIOLATION = {
    (MODEL, "S1"): r"now<dl\[j\]",
    (SESSION, "S1"): r"hi\[x\]==2\)\)&&\(now<hdl\)|th\[j\]>>x",
    (SESSION, "S2"): r"ended",
}


# The checks of `nox -s model`. Bounds are in ticks: lease duration D=4, margin M=1,
# max_clock_skew S=1 (the defaults of lease.pml); see docs/protocol.md.
CHECKS = [
    Check(
        "clock",
        "2 workers, clock takeover, lossy network of 2 requests in flight, 5 ticks",
        {"N": 2, "TAKEOVER": 0, "C": 2, "T_MAX": 5, "TOK_MAX": 3},
    ),
    Check(
        "observe",
        "2 workers, observe takeover, lossy network of 1 request in flight, 4 ticks",
        {"N": 2, "TAKEOVER": 1, "C": 1, "T_MAX": 4, "TOK_MAX": 3},
    ),
    Check(
        "mixed-steps",
        "2 workers, one per takeover mode, a wall clock stepping within the skew, 4 ticks",
        {"N": 2, "TAKEOVER": 2, "C": 1, "T_MAX": 4, "TOK_MAX": 2, "CLOCK_STEPS": 1},
    ),
    Check(
        "three-workers",
        "3 workers, clock takeover, lossy network of 1 request in flight, 3 ticks",
        {"N": 3, "TAKEOVER": 0, "C": 1, "T_MAX": 3, "TOK_MAX": 3},
    ),
]

CHECKS += [
    Check(
        f"liveness-{mode}",
        f"P4 under weak fairness: 3 prompt workers ({mode} takeover), reliable network, "
        "one holder crash by tick 3, 10 ticks",
        {"N": 3, "TAKEOVER": n, "C": 3, "T_MAX": 10, "TOK_MAX": 12, "CRASH_BY": 3},
        liveness=True,
    )
    for n, mode in enumerate(("clock", "observe", "mixed"))
]

# Session leases (model/session.pml): duration D=4, margin M=1, skew S=1 ticks; one
# session write stamped per tick (F=1, BUMP=0). Budget: at most 90 s for all of them.
SESSION_BASE = {"F": 1, "BUMP": 0}
CHECKS += [
    Check(
        "session-clock",
        "1 item, 1 clock-rule taker, lossy network of 2 requests in flight with retries, 6 ticks",
        {**SESSION_BASE, "NI": 1, "NT": 1, "TMODE": 0, "C": 2, "T_MAX": 6, "TOK_MAX": 2},
        model=SESSION,
    ),
    Check(
        "session-observe",
        "1 item, 1 observing taker, lossy network of 1 request in flight with retries, 5 ticks",
        {**SESSION_BASE, "NI": 1, "NT": 1, "TMODE": 1, "C": 1, "T_MAX": 5, "TOK_MAX": 2},
        model=SESSION,
    ),
    Check(
        "session-two-items",
        "2 items, 1 observing taker, lossy network of 1 request in flight, no retries, 4 ticks",
        {
            **SESSION_BASE,
            "NI": 2,
            "NT": 1,
            "TMODE": 1,
            "C": 1,
            "T_MAX": 4,
            "TOK_MAX": 1,
            "RETRIES": 0,
        },
        model=SESSION,
    ),
    Check(
        "session-two-takers",
        "1 item, 2 takers (clock, observe), lossy network of 1 request in flight, no retries, "
        "4 ticks",
        {
            **SESSION_BASE,
            "NI": 1,
            "NT": 2,
            "TMODE": 2,
            "C": 1,
            "T_MAX": 4,
            "TOK_MAX": 1,
            "RETRIES": 0,
        },
        model=SESSION,
    ),
    Check(
        "session-liveness-clock",
        "L under weak fairness: prompt holder and clock-rule taker, 1 item, reliable "
        "network, holder crash by tick 2, items taken by tick 9 (= 2 + D + 2S + 1)",
        {
            **SESSION_BASE,
            "NI": 1,
            "NT": 1,
            "TMODE": 0,
            "C": 2,
            "T_MAX": 9,
            "TOK_MAX": 3,
            "CRASH_BY": 2,
        },
        liveness=True,
        model=SESSION,
    ),
    Check(
        "session-liveness-observe",
        "L under weak fairness: prompt holder and observing taker, 2 items, reliable "
        "network, holder crash by tick 2, items taken by tick 7 (= 2 + D + 1)",
        {
            **SESSION_BASE,
            "NI": 2,
            "NT": 1,
            "TMODE": 1,
            "C": 2,
            "T_MAX": 7,
            "TOK_MAX": 2,
            "CRASH_BY": 2,
        },
        liveness=True,
        model=SESSION,
    ),
]

MUTANTS = [
    Check(
        "no-forward",
        "renewal without the expiry-forward condition: the late-renewal overlap",
        {"N": 2, "TAKEOVER": 0, "C": 2, "T_MAX": 5, "TOK_MAX": 2, "DROPS": 0},
        mutant="MUTANT_NO_FORWARD",
    ),
    Check(
        "lessee-only",
        "renewal conditioned on the lessee only: the ABA takeover",
        {"N": 2, "TAKEOVER": 0, "C": 2, "T_MAX": 5, "TOK_MAX": 3, "DROPS": 0},
        mutant="MUTANT_LESSEE_ONLY",
    ),
    Check(
        "deadline-from-answer",
        "local deadline counted from the answer, not the send: the stall overlap",
        {"N": 2, "TAKEOVER": 0, "C": 2, "T_MAX": 5, "TOK_MAX": 2, "DROPS": 0},
        mutant="MUTANT_DEADLINE_FROM_ANSWER",
    ),
]

# clock takeovers need 5 ticks (taker's clock ahead by S); the row-level mutants, 2 ticks
SESSION_MUTANT = {
    **SESSION_BASE,
    "NI": 1,
    "NT": 1,
    "TMODE": 0,
    "C": 2,
    "T_MAX": 5,
    "TOK_MAX": 2,
    "RETRIES": 0,
}
SESSION_SHORT = {**SESSION_BASE, "NI": 1, "NT": 1, "TMODE": 0, "C": 2, "T_MAX": 2, "TOK_MAX": 2}
MUTANTS += [
    Check(
        "session-take-no-end",
        "a taker takes an item of an expired session without ending it first",
        SESSION_MUTANT,
        mutant="MUTANT_TAKE_NO_END",
        model=SESSION,
    ),
    Check(
        "session-end-unpinned",
        "the taker's end of a session not pinned to #su as read",
        SESSION_MUTANT,
        mutant="MUTANT_END_UNPINNED",
        model=SESSION,
    ),
    Check(
        "session-renew-no-token",
        "session renewal not pinned to the token: it lands on the tombstone",
        SESSION_SHORT,
        mutant="MUTANT_RENEW_NO_TOKEN",
        model=SESSION,
        violates="S2",
    ),
    Check(
        "session-delete",
        "DeleteItem instead of a tombstone: the late start duplicate re-creates the row",
        SESSION_SHORT,
        mutant="MUTANT_DELETE",
        model=SESSION,
        violates="S2",
    ),
    Check(
        "session-deadline-from-answer",
        "the holder's session deadline counted from the answer, not the send",
        SESSION_MUTANT,
        mutant="MUTANT_DEADLINE_FROM_ANSWER",
        model=SESSION,
    ),
    Check(
        "session-named-no-expect",
        "item acquisition under the session without reading the token first, a retried "
        "refusal showing our lessee and session counted as ours",
        SESSION_SHORT,
        mutant="MUTANT_NAMED_NO_EXPECT",
        model=SESSION,
    ),
]

# What pan prints when it did not explore everything it was asked to.
CUT_SHORT = (
    "max search depth too small",
    "out of memory",
    "reached -DMEMLIM bound",
    "Search not completed",
    "search depth too small",
    "hash table is full",
)


class Failure(Exception):
    """A check that failed: a violation, or a search that was cut short."""


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and cmd[0] != "./pan":
        raise Failure(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return out


def spin_defines(check: Check, *, only_mutex: bool) -> list[str]:
    flags = [f"-D{k}={v}" for k, v in check.defines.items()]
    if check.mutant:
        flags.append(f"-D{check.mutant}")
    if only_mutex:
        flags.append("-DONLY_MUTEX" if check.model == MODEL else "-DONLY_S1")
    if check.liveness:
        flags.append("-DLIVENESS")
    return flags


def build(check: Check, work: Path, *, only_mutex: bool, bfs: bool) -> list[str]:
    """Generate and compile the verifier in ``work``; returns the spin -D flags used."""
    shutil.copy(check.model, work / check.model.name)
    flags = spin_defines(check, only_mutex=only_mutex)
    run(["spin", "-a", *flags, check.model.name], work)
    # Exhaustive: no bitstate, no hash compaction; COLLAPSE only compresses the states.
    cflags = ["-O2", "-w", "-DCOLLAPSE", f"-DMEMLIM={MEMLIM}"]
    if check.liveness:
        cflags.append("-DNFAIR=3")  # weak fairness over the model's six processes
    else:
        cflags += ["-DSAFETY", "-DNOFAIR"]
    if bfs:
        cflags.append("-DBFS")  # breadth first: the shortest counterexample
    run(["gcc", *cflags, "-o", "pan", "pan.c"], work)
    return flags


def stat(pattern: str, out: str, default: str = "?") -> str:
    m = re.search(pattern, out)
    return m.group(1) if m else default


def verify(check: Check, work: Path) -> tuple[str, float]:
    """Run one normal check; raises Failure on a violation or a truncated search."""
    build(check, work, only_mutex=False, bfs=False)
    args = ["./pan", f"-m{DEPTH}", "-n"]
    if check.liveness:
        args += ["-a", "-f", "-N", "p_taken"]
    t0 = time.monotonic()
    out = run(args, work)
    took = time.monotonic() - t0
    errors = stat(r"errors: (\d+)", out, "")
    if errors == "":
        raise Failure(f"{check.name}: no verdict from pan:\n{out[-3000:]}")
    if int(errors):
        trail = replay(check, work, only_mutex=False)
        raise Failure(f"{check.name}: {errors} error(s):\n{out[-2000:]}\n{trail}")
    for phrase in CUT_SHORT:
        if phrase in out:
            raise Failure(f"{check.name}: the search was cut short ({phrase!r}):\n{out[-2000:]}")
    return out, took


def replay(check: Check, work: Path, *, only_mutex: bool) -> str:
    """The counterexample's events, as printed by the model when spin replays the trail."""
    flags = spin_defines(check, only_mutex=only_mutex)
    out = run(["spin", "-t", *flags, check.model.name], work)
    events = []
    for line in out.splitlines():
        m = re.search(r"EV t=(\d+)\s+(.*\S)", line)
        if m:
            fine = int(str(check.defines.get("F", FINE)))
            events.append((int(m.group(1)), describe(m.group(2), fine)))
    failed = re.search(r"text of failed assertion: (.*)", out)
    if failed:
        text = failed.group(1).strip()
        if "now<dl[j]" in text or re.search(VIOLATION[(SESSION, "S1")], text):
            text = "two workers inside their work at once (P1/S1 violated)"
        elif "ended" in text and check.model == SESSION:
            text = (
                "a write landed on the ended session row, or an item of K was taken "
                "before K's end (S2 violated)"
            )
        events.append((events[-1][0] if events else 0, "=> " + text))
    return "; ".join(f"t={t} {text}" for t, text in events)


def describe(event: str, fine: int = FINE) -> str:
    """Readable event text: untils in ticks, store outcomes in words."""
    m = re.match(r"store (\d) (\d): (.*)", event)
    if m:
        live, ok, rest = m.groups()
        verdict = "APPLIES" if ok == "1" else "refuses"
        event = f"store {verdict} {'' if live == '1' else 'late '}{rest}"
    event = re.sub(r"until (\d+)", lambda u: f"until {_ticks(int(u.group(1)), fine)}", event)
    event = re.sub(r"cutoff (\d+)", lambda u: f"cutoff {_ticks(int(u.group(1)), fine)}", event)
    return event.replace("row was W0/token 0/until 0", "row was free").replace("W0/", "free/")


def _ticks(value: int, fine: int = FINE) -> str:
    whole, part = divmod(value, fine)
    return f"{whole}" if part == 0 else f"{whole}+{part}/{fine}"


def mutant(check: Check, work: Path) -> tuple[str, float, str]:
    """Run one broken variant; raises Failure unless it is caught violating its property."""
    only = check.violates == "S1"  # an overlap of work, every other assertion off
    build(check, work, only_mutex=only, bfs=True)
    t0 = time.monotonic()
    out = run(["./pan", f"-m{DEPTH}", "-n"], work)
    took = time.monotonic() - t0
    errors = int(stat(r"errors: (\d+)", out, "0"))
    if not errors or "assertion violated" not in out:
        raise Failure(f"mutant {check.name} ({check.mutant}) was NOT caught:\n{out[-2000:]}")
    failed = re.search(r"assertion violated (.*)", out)
    if not failed or not re.search(VIOLATION[(check.model, check.violates)], failed.group(1)):
        raise Failure(f"mutant {check.name}: a different assertion failed:\n{out[-2000:]}")
    return out, took, replay(check, work, only_mutex=only)


def bounds(check: Check) -> str:
    return " ".join(f"{k}={v}" for k, v in check.defines.items())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", action="store_true", help="run the broken variants")
    parser.add_argument("--only", metavar="NAME", help="run just this check (or mutant)")
    parser.add_argument("--keep", action="store_true", help="keep the build directory")
    opts = parser.parse_args(argv)
    for tool in ("spin", "gcc"):
        if shutil.which(tool) is None:
            print(f"model: {tool!r} is not on PATH (apt-get install spin gcc)", file=sys.stderr)
            return 2
    checks = MUTANTS if opts.mutants else CHECKS
    if opts.only:
        checks = [c for c in CHECKS + MUTANTS if c.name == opts.only]
        if not checks:
            print(f"no check named {opts.only!r}", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="aiolease-model-"))
    failed = 0
    started = time.monotonic()
    try:
        for check in checks:
            work = root / check.name
            work.mkdir()
            try:
                if check.mutant:
                    out, took, summary = mutant(check, work)
                    depth = stat(r"at depth (\d+)", out)
                    print(
                        f"CAUGHT {check.name} ({check.mutant}) in {took:.1f} s, "
                        f"trail depth {depth}: {check.about}"
                    )
                    print(f"  counterexample: {summary}")
                else:
                    out, took = verify(check, work)
                    stored = stat(r"(\d+) states, stored", out)
                    depth = stat(r"depth reached (\d+)", out)
                    print(
                        f"OK {check.name}: {check.about} [{bounds(check)}]: {stored} states "
                        f"stored, depth {depth}, errors: 0, {took:.1f} s"
                    )
            except Failure as exc:
                failed += 1
                print(f"FAIL {exc}")
            sys.stdout.flush()
    finally:
        if opts.keep:
            print(f"build directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{len(checks) - failed} of {len(checks)} passed in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    sys.exit(main(sys.argv[1:]))
