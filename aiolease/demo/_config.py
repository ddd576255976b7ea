"""The demo's numbers, each with its reason; shared by the worker, the parent and the report."""

from __future__ import annotations

# Two more workers than items: standbys, so that a crashed worker's item is taken over as
# soon as its lease has expired, and a stopped worker's at once, which is what the demo is
# there to show (and after both, every item still has a worker).
DEFAULT_WORKERS = 6
DEFAULT_ITEMS = 4
DEFAULT_DURATION = 30.0
# Short enough for a failover to happen within seconds, long enough for visible renewals
# (the locker renews every third of it).
LEASE_SECONDS = 3.0
# All workers run on this machine and read one clock: a small skew allowance suffices.
CLOCK_SKEW = 0.5
# How often a waiting worker looks for a free or expired item.
WAIT_PERIOD = 0.5
# The fake work: this many steps of this many seconds per hold, then a short rest.
WORK_STEP = 0.5
WORK_STEPS = (4, 9)
REST = (0.2, 0.8)
# Below this there is no time for a crash, a lease expiry and a takeover.
MIN_DURATION = 10.0
# The crash, the graceful stop, as fractions of --duration.
# Each waits, up to a tenth of --duration more, for a standby that is looking for an item.
KILL_AT = 0.3
# The stop waits for the crashed worker's item to be taken over (the standby is needed).
STOP_AT = (0.5, 0.8)  # not before the first, not after the second
# A worker looking this long has found every item held: it will take the next one freed.
STANDBY_AFTER = 0.3
REFRESH = 0.25
STATUS_EVERY = 5.0  # plain (non-terminal) output: one status line this often
STOP_GRACE = 5.0  # a stopped worker releases and exits within this, or is killed
WORKER_START_TIMEOUT = 60.0  # every worker is connected within this, or the demo gives up
# A worker's exit code when the table or the endpoint cannot be used (the CLI's EXIT_STORE).
EXIT_STORE = 3

# --balance: workers serve a pool with session.serve(); some join, one stops, one is killed.
BALANCE_ITEMS = 24
BALANCE_WORKERS = 5  # the first BALANCE_WORKERS - 2 start, two join later
BALANCE_MIN_WORKERS = 4  # two at the start, two joining; then one stops and one is killed
# One step of work on an item; a draining item's work returns at once, within a step.
BALANCE_STEP = 0.25
# The script, as fractions of --duration: each moment waits for the pool to have settled
# since the one before (balanced for BALANCE_SETTLED seconds), up to BALANCE_LATE seconds
# past its time (on a loaded machine, so that each moment's figure is its own).
BALANCE_SCRIPT = (
    (0.20, "join"),
    (0.35, "join"),
    (0.55, "SIGTERM"),
    (0.75, "SIGKILL"),
)
BALANCE_SETTLED = 1.0
BALANCE_LATE = 5.0
# After --duration, wait at most this long for the pool to balance after the last moment
# (a killed worker's items are free only once its session has expired).
BALANCE_OVERTIME = 10.0
