/*
 * aiolease: the lease protocol of one item, as SPIN explores it (docs/protocol.md).
 *
 * WHAT IS MODELLED
 *   One item row (holder, fencing token, LeaseUntil, stored duration) and N workers
 *   running the library's obtain / acquire / renew / release / undo code paths, with
 *   these forms of the conditions built in aiolease/_wire/requests.py (renewal AS FIXED by
 *   issue 12 item 1; docs/protocol.md lists how the code differs, D1-D8):
 *     acquire, clock mode  : attribute_exists(#k) AND (attribute_not_exists(#l)
 *                            OR (attribute_type(#u, :n) AND #u < :cutoff))
 *     acquire, observe FREE: attribute_exists(#k) AND attribute_not_exists(#l)
 *     acquire, observe RIPE: attribute_exists(#k) AND (attribute_not_exists(#l)
 *                            OR (#l = :ol AND #u = :ou AND #t = :ot))
 *     renew                : #l = :l AND #t = :t AND #u < :u
 *     release              : #l = :l AND #t = :t
 *     undo (cancelled acq) : #l = :l AND #u = :u
 *   what each write stamps (sent_at from the loop clock, then until = max(wall + D,
 *   last + 1) per store; the code keeps issued values per row, see D4), the local deadline sent_at + D - M, the renewal loop (fresh
 *   stamp after LeaseUnavailableError, same payload on the store's own retries, loss at
 *   the deadline, an answer after the deadline does not revive the lease), and the
 *   lost-answer reconciliations (an acquisition refused by a row showing our lessee and
 *   our exact until is ours; a renewal refused by a row showing our lessee, our token and
 *   our exact until is ours).
 *
 * ENVIRONMENT
 *   - time: one global tick counter `now` (the monotonic base; every loop clock is it);
 *     wall clock of worker i = now + off[i], off[i] in 0..S, so any two wall clocks
 *     differ by at most S = max_clock_skew; with CLOCK_STEPS > 0 a wall clock may step
 *     (forwards or backwards) within that band, CLOCK_STEPS times in all.
 *   - network: a bag of at most C requests in flight (canonically sorted): delivered in
 *     any order after any delay, dropped (DROPS), and duplicated: a client that gives up
 *     on a request (timeout, transient error) leaves it in flight as an orphan whose
 *     answer nobody reads, and the store's retry sends a second copy of the same
 *     payload. Answers wait in a per-worker slot until the worker reads them or gives up
 *     (a dropped answer is the same as a give-up before reading it).
 *   - workers stall arbitrarily: no fairness in the safety runs; any worker may stop
 *     acting for any time, or forever (a crash), between any two of its steps.
 *   - takeover mode per worker: TAKEOVER 0 clock, 1 observe, 2 mixed (worker 0 clock,
 *     the others observe).
 *
 * BOUNDS (defaults below; run.py states the ones of each run)
 *   N workers, one item, C requests in flight, T_MAX ticks of time, A_MAX fresh
 *   acquisition attempts in all, at most BUMP fine units of until-floor above now + D per
 *   stamp (so a worker stamps a handful of writes per tick; renewals are otherwise
 *   bounded only by time), lease duration D, margin M and skew S in ticks, F fine units
 *   (nanoseconds of the model) per tick.
 *
 * ABSTRACTED AWAY
 *   - the read of clock mode (find_available): a worker may send an acquisition at any
 *     moment, which covers every stale or missing scan result;
 *   - heartbeat periods and backoff: a holder may renew at any moment before its deadline;
 *   - release's True/False reconciliation (it changes what is logged, not who works);
 *     release and undo are sent and forgotten (the scope does not wait for their answer);
 *   - force_release, add_item, backfill_buckets (operator and setup writes; see docs);
 *   - rows written by the Go package (no stored duration, Verdict.CLOCK), explicit until,
 *     several items and pools, sessions, clock *rate* drift, tick fractions.
 *
 * PROPERTIES
 *   P1 mutual exclusion of work: worker i works while it holds (HOLD/RENEW) and
 *      now < dl[i]; asserted every time a worker starts or extends work.
 *   P2 the fencing tokens of successive working holders strictly increase.
 *   P3 within one tenure (same lessee and token) the stored LeaseUntil never decreases.
 *   P4 (LIVENESS build, lease_live.pml) see there.
 *
 * MUTANTS (-D): MUTANT_NO_FORWARD (renew: #l = :l AND #t = :t), MUTANT_LESSEE_ONLY
 *   (renew: #l = :l), MUTANT_DEADLINE_FROM_ANSWER (dl = answer time + D - M).
 */

/* ---------------------------------------------------------------- parameters */
#ifndef N
#define N 2            /* workers */
#endif
#ifndef C
#define C 3            /* requests in flight */
#endif
#ifndef T_MAX
#define T_MAX 7        /* last tick */
#endif
#ifndef D
#define D 4            /* lease duration (ticks) */
#endif
#ifndef M
#define M 1            /* safety margin (ticks) */
#endif
#ifndef S
#define S 1            /* max_clock_skew (ticks) */
#endif
#ifndef F
#define F 2            /* fine units per tick */
#endif
#ifndef TOK_MAX
#define TOK_MAX 3      /* no new acquisition is attempted once TOK_MAX have landed */
#endif
#ifndef BUMP
#define BUMP 1         /* until floor: at most this many fine units above now + D */
#endif
#ifndef CLOCK_STEPS
#define CLOCK_STEPS 0  /* wall-clock steps within the skew band */
#endif
#ifndef DROPS
#define DROPS 1        /* the network may drop requests */
#endif
#ifndef TAKEOVER
#define TAKEOVER 0     /* 0 clock, 1 observe, 2 mixed */
#endif

#ifdef LIVENESS
/* P4's configuration: prompt workers and a reliable network (see PROPERTIES) */
#undef DROPS
#define DROPS 0
#define NOT_DEAD(i) (dead != (i) + 1)
#define SAFETY_ONLY(x) false
#ifndef CRASH_BY
#define CRASH_BY 1     /* the one crash happens by this tick */
#endif
#else
#define NOT_DEAD(i) true
#define SAFETY_ONLY(x) x
#endif

#if TAKEOVER == 0
#define OBSERVES(i) false
#elif TAKEOVER == 1
#define OBSERVES(i) true
#else
#define OBSERVES(i) ((i) != 0)
#endif

/* ------------------------------------------------------------------- state */
byte now;               /* monotonic time, ticks */
byte off[N];            /* wall clock of worker i = now + off[i] */
byte nsteps;            /* clock steps taken */

/* the item row: ProcessID (0 = absent, else worker+1), LeaseToken (0 = absent),
   LeaseUntil (fine units), LeaseDuration.ms (0 = absent; its "until" copy is always
   LeaseUntil here, as no Go worker rewrites the row) */
byte rl;
byte rt;
byte ru;
byte rd;

/* requests: one int each, packed; 0 = empty slot; sorted descending (canonical bag) */
int net[C];
#define K_ACQC 7   /* acquire, clock rule: u = new until, x = cutoff */
#define K_ACQR 6   /* acquire, observe RIPE: u = new until, x = expected until, t, o */
#define K_ACQF 5   /* acquire, observe FREE: u = new until */
#define K_REN  4   /* renew: t = token, u = new until */
#define K_REL  3   /* release: t = token */
#define K_UNDO 2   /* undo a cancelled acquisition: u = its until */
#define K_READ 1   /* consistent GetItem (observe mode) */
#define RQ(k, w, live, t, u, x, o) (((k) << 25) | ((w) << 23) | ((live) << 22) | ((t) << 18) | ((u) << 10) | ((x) << 2) | (o))
#define R_K(v) (((v) >> 25) & 7)
#define R_W(v) (((v) >> 23) & 3)
#define R_LIVE(v) (((v) >> 22) & 1)
#define R_T(v) (((v) >> 18) & 15)
#define R_U(v) (((v) >> 10) & 255)
#define R_X(v) (((v) >> 2) & 255)
#define R_O(v) ((v) & 3)
#define LIVE_BIT (1 << 22)
#define SPACE (net[C - 1] == 0)

/* answers: one slot per worker; 0 = none. ok, and the row (ALL_NEW / ALL_OLD / read) */
#define AN(ok, l, t, u) ((1 << 15) | ((ok) << 14) | ((l) << 12) | ((t) << 8) | (u))
#define A_OK(a) (((a) >> 14) & 1)
#define A_L(a) (((a) >> 12) & 3)
#define A_T(a) (((a) >> 8) & 15)
#define A_U(a) ((a) & 255)

/* worker phases */
#define IDLE  0   /* obtaining: may send an acquisition (clock) or a read (observe) */
#define READ  1   /* read sent (observe) */
#define TAKEF 2   /* read says free: acquisition to send (observe) */
#define TAKER 3   /* read says ripe: acquisition to send (observe) */
#define ACQ   4   /* acquisition sent */
#define HOLD  5   /* holding; works while now < dl */
#define RENEW 6   /* holding, a renewal call outstanding */

byte ph[N];
byte tok[N];     /* token of the lease held / being renewed */
byte dl[N];      /* local deadline (ticks), while holding */
byte sent[N];    /* loop time of the outstanding write's stamp */
byte wu[N];      /* until of the outstanding write */
byte last[N];    /* the store's until floor (_last_until_ns) */
int req[N];      /* the outstanding request, without the live bit (for the store's retry) */
int ans[N];      /* the answer slot */
byte ol[N];      /* observe mode: the state last seen (lessee, token, until) ... */
byte ot[N];
byte ou[N];
byte ofirst[N];  /* ... and when it was first seen (loop time after the read returned) */
#ifdef MUTANT_LESSEE_ONLY
bit cross;       /* ghost: a renewal was applied under another token than its own (ABA) */
#endif

#define DONE  7   /* LIVENESS: released after its one work, stays out */

#define WORKING(j) ((ph[j] == HOLD || ph[j] == RENEW) && now < dl[j])

#ifdef LIVENESS
bit acted[N];    /* the worker took its one obtain/renew step of this tick */
byte dead;       /* worker + 1 that crashed (stopped for good), 0 none */
#define ALIVE(j) (dead != (j) + 1)
#define WAITING(j) (ALIVE(j) && ph[j] <= ACQ)
#define LWORK(j) (ALIVE(j) && WORKING(j))
#if N == 2
#define SOME_WAITING (WAITING(0) || WAITING(1))
#define SOME_WORKING (LWORK(0) || LWORK(1))
#else
#define SOME_WAITING (WAITING(0) || WAITING(1) || WAITING(2))
#define SOME_WORKING (LWORK(0) || LWORK(1) || LWORK(2))
#endif
/* P4: whenever the item is free (before the last tick: a waiter's next attempt is one
   tick away) or held by a crashed worker (CRASH_BY leaves time for it to expire) while a
   live worker waits, eventually a live worker works on it */
ltl p_taken { [] ((((rl == 0 && now < T_MAX) || (dead != 0 && rl == dead)) && SOME_WAITING) -> <> SOME_WORKING) }
#define ACT(i) !acted[i]
#define ACTED(i) acted[i] = 1
#else
#define ACT(i) true
#define ACTED(i) skip
#endif
#define WALL(i) ((now + off[i]) * F)
#define NATURAL(i) (WALL(i) + D * F)
#define STAMP_OK(i) (last[i] + 1 <= NATURAL(i) + BUMP)

/* events, printed when a trail is replayed (spin -t); run.py summarises them */
#define EV printf("EV t=%d ", now); printf

/* ---------------------------------------------------------------- the bag */
inline put(v) {
  assert(SPACE);
  k = C - 1;
  do
  :: k > 0 && net[k - 1] < (v) -> net[k] = net[k - 1]; k--
  :: else -> break
  od;
  net[k] = (v)
}

inline take_out(idx) {
  k = idx;
  do
  :: k < C - 1 -> net[k] = net[k + 1]; k++
  :: else -> break
  od;
  net[C - 1] = 0
}

/* the client gives up on worker i's live request: it stays in flight as an orphan */
inline orphan(i) {
  j = 0;
  do
  :: j < C && net[j] != 0 && R_W(net[j]) == i && R_LIVE(net[j]) ->
       v = net[j] - LIVE_BIT; take_out(j); put(v); break
  :: j < C && !(net[j] != 0 && R_W(net[j]) == i && R_LIVE(net[j])) -> j++
  :: j == C -> break
  od;
  ans[i] = 0
}

/* _send_times: sent_at first, then until = max(now + D, last + 1) on the wall clock */
inline stamp(i) {
  sent[i] = now;
  v = NATURAL(i);
  if
  :: v > last[i] -> wu[i] = v
  :: else -> wu[i] = last[i] + 1
  fi;
  last[i] = wu[i];
  assert(wu[i] < 250)
}

/* ---------------------------------------------------------------- properties */
inline check_work(i) {
  j = 0;
  do
  :: j < N ->
#ifdef MUTANT_LESSEE_ONLY
       /* this mutant is about ABA: count only overlaps after a cross-tenure renewal */
       assert(j == i || !WORKING(j) || !cross);
#else
       assert(j == i || !WORKING(j));          /* P1 */
#endif
       j++
  :: else -> break
  od
}

/* a loss (or the body's exit): the scope stops the work and releases, shielded; the
   release may also not be sent (timed out, the loop stalled for good) */
inline lose(i) {
  EV("W%d stops work (token %d)\n", i + 1, tok[i]);
  if
  :: SPACE -> put(RQ(K_REL, i, 0, tok[i], 0, 0, 0))
  :: else -> skip
  fi;
  ph[i] = IDLE; tok[i] = 0; dl[i] = 0; sent[i] = 0; wu[i] = 0; req[i] = 0; ans[i] = 0
}

/* the worker starts working under the answer of an acquisition (ok or reconciled) */
inline enter(i, t) {
  tok[i] = t;
#ifdef MUTANT_DEADLINE_FROM_ANSWER
  dl[i] = now + D - M;
#else
  dl[i] = sent[i] + D - M;
#endif
  sent[i] = 0; wu[i] = 0; req[i] = 0; ans[i] = 0;
  ol[i] = 0; ot[i] = 0; ou[i] = 0; ofirst[i] = 0;   /* observations.forget */
  if
  :: now < dl[i] ->
       EV("W%d starts work, token %d, deadline %d\n", i + 1, tok[i], dl[i]);
       ph[i] = HOLD;
       check_work(i);
#ifndef ONLY_MUTEX
       /* P2: work starts only under the row's current tenure; the row's token only grows
          (+1 per acquisition), so successive holders' tokens strictly increase */
       assert(rl == i + 1 && rt == tok[i]);
#endif
       skip
  :: else ->
       /* answered after its own deadline: not entered (issue 12 item 4); released */
       EV("W%d: acquisition answered after its deadline, not entered\n", i + 1);
       lose(i)
  fi
}

/* ---------------------------------------------------------------- the store */

/* Canonical form: orphaned requests that can never change the row again are dropped
   (what a drop would do; delivering them is a no-op, and nobody reads their answer).
   A renewal or release of token t: dead once the row's token passed t, or the tenure t
   ended (tokens only grow, so (lessee, t) never comes back), or (renewal, forward rule)
   the stored until reached its own. An undo of until u: dead unless the row is ours at
   u or an acquisition with payload u is still in flight. */
#if defined(MUTANT_LESSEE_ONLY)
#define REN_DEAD(v) false
#elif defined(MUTANT_NO_FORWARD)
#define REN_DEAD(v) (rt > R_T(v) || (rt == R_T(v) && rl != R_W(v) + 1))
#else
#define REN_DEAD(v) (rt > R_T(v) || (rt == R_T(v) && (rl != R_W(v) + 1 || ru >= R_U(v))))
#endif
#define REL_DEAD(v) (rt > R_T(v) || (rt == R_T(v) && rl != R_W(v) + 1))
#define ACQ_WITH(x, w, u) (net[x] != 0 && R_K(net[x]) >= K_ACQF && R_W(net[x]) == (w) && R_U(net[x]) == (u))
#if C == 1
#define ACQ_IN_FLIGHT(w, u) ACQ_WITH(0, w, u)
#elif C == 2
#define ACQ_IN_FLIGHT(w, u) (ACQ_WITH(0, w, u) || ACQ_WITH(1, w, u))
#elif C == 3
#define ACQ_IN_FLIGHT(w, u) (ACQ_WITH(0, w, u) || ACQ_WITH(1, w, u) || ACQ_WITH(2, w, u))
#else
#define ACQ_IN_FLIGHT(w, u) (ACQ_WITH(0, w, u) || ACQ_WITH(1, w, u) || ACQ_WITH(2, w, u) || ACQ_WITH(3, w, u))
#endif
#define DEAD(v) (!R_LIVE(v) && \
  ((R_K(v) == K_REN && REN_DEAD(v)) || (R_K(v) == K_REL && REL_DEAD(v)) || \
   (R_K(v) == K_UNDO && !(rl == R_W(v) + 1 && ru == R_U(v)) && !ACQ_IN_FLIGHT(R_W(v), R_U(v)))))
/* an observe-mode acquisition expecting a held state the row has left: that state never
   comes back (P2, P3), so only the "free" half of its condition can still hold: it is
   the FREE acquisition with the same payload (not in the mutants, which break P3) */
#if !defined(MUTANT_NO_FORWARD) && !defined(MUTANT_LESSEE_ONLY)
#define STALE_ACQR(v) (R_K(v) == K_ACQR && !(rl == R_O(v) && rt == R_T(v) && ru == R_X(v)))
#else
#define STALE_ACQR(v) false
#endif
inline gc() {
  g = 0;
  do
  :: g < C && net[g] != 0 && DEAD(net[g]) -> take_out(g)
  :: g < C && net[g] != 0 && STALE_ACQR(net[g]) ->
       v = RQ(K_ACQF, R_W(net[g]), R_LIVE(net[g]), 0, R_U(net[g]), 0, 0);
       take_out(g); put(v); g = 0
  :: g < C && !(net[g] != 0 && (DEAD(net[g]) || STALE_ACQR(net[g]))) -> g++
  :: g == C -> break
  od;
#if !defined(MUTANT_NO_FORWARD) && !defined(MUTANT_LESSEE_ONLY)
  /* a sighting of a held state the row has left can never be matched again (unless a
     read answered before the change is still to be judged): forget it */
  g = 0;
  do
  :: g < N ->
       if
       :: ol[g] != 0 && ph[g] != TAKER && !(ol[g] == rl && ot[g] == rt && ou[g] == ru) &&
          !(ph[g] == READ && A_L(ans[g]) == ol[g] && A_T(ans[g]) == ot[g] && A_U(ans[g]) == ou[g]) ->
            ol[g] = 0; ot[g] = 0; ou[g] = 0; ofirst[g] = 0
       :: else -> skip
       fi;
       g++
  :: else -> break
  od;
#endif
  g = 0
}

inline apply(idx) {
  v = net[idx];
  take_out(idx);
  w = R_W(v);
  ok = 0;
  if
  :: R_K(v) == K_ACQC -> ok = (rl == 0 || ru < R_X(v))
  :: R_K(v) == K_ACQF -> ok = (rl == 0)
  :: R_K(v) == K_ACQR -> ok = (rl == 0 || (rl == R_O(v) && ru == R_X(v) && rt == R_T(v)))
  :: R_K(v) == K_REN ->
#if defined(MUTANT_NO_FORWARD)
       ok = (rl == w + 1 && rt == R_T(v))
#elif defined(MUTANT_LESSEE_ONLY)
       ok = (rl == w + 1)
#else
       ok = (rl == w + 1 && rt == R_T(v) && ru < R_U(v))
#endif
  :: R_K(v) == K_REL -> ok = (rl == w + 1 && rt == R_T(v))
  :: R_K(v) == K_UNDO -> ok = (rl == w + 1 && ru == R_U(v))
  fi;
  if
  :: R_K(v) == K_REN -> EV("store %d %d: W%d renew(token %d, until %d); row was W%d/token %d/until %d\n", R_LIVE(v), ok, w + 1, R_T(v), R_U(v), rl, rt, ru)
  :: R_K(v) == K_REL -> EV("store %d %d: W%d release(token %d)\n", R_LIVE(v), ok, w + 1, R_T(v))
  :: R_K(v) == K_UNDO -> EV("store %d %d: W%d undo(until %d)\n", R_LIVE(v), ok, w + 1, R_U(v))
  :: R_K(v) >= K_ACQF -> EV("store %d %d: W%d acquire(until %d); row was W%d/token %d/until %d\n", R_LIVE(v), ok, w + 1, R_U(v), rl, rt, ru)
  fi;
  /* The answer, as far as the worker's decision reads it. A refusal carries the row
     (ReturnValuesOnConditionCheckFailure=ALL_OLD); the lost-answer reconciliation is
     decided on it here, on the request's own payload (equal to the worker's, as a
     worker has one live call), so that answers differing only in what nobody reads
     are one state:
       acquisition: refused, but the row shows our lessee and our exact until -> ours
       renewal:     refused, but the row shows our lessee, our token, our exact until */
  if
  :: R_LIVE(v) && !ok && R_K(v) >= K_ACQF ->
       assert(ans[w] == 0);
       if
       :: rl == w + 1 && ru == R_U(v) -> ans[w] = AN(1, 0, rt, 0)
       :: else -> ans[w] = AN(0, 0, 0, 0)
       fi
  :: R_LIVE(v) && !ok && R_K(v) == K_REN ->
       assert(ans[w] == 0);
       if
       :: rl == w + 1 && rt == R_T(v) && ru == R_U(v) -> ans[w] = AN(1, 0, 0, 0)
       :: else -> ans[w] = AN(0, 0, 0, 0)
       fi
  :: else -> skip
  fi;
  if
  :: ok && R_K(v) >= K_ACQF ->
       rl = w + 1; rt = rt + 1; ru = R_U(v); rd = D;
       assert(rt < 15)
  :: ok && R_K(v) == K_REN ->
#ifndef ONLY_MUTEX
       assert(R_U(v) >= ru);                       /* P3: same lessee and token */
#endif
#ifdef MUTANT_LESSEE_ONLY
       if :: rt != R_T(v) -> cross = 1 :: else -> skip fi;
#endif
       ru = R_U(v); rd = D
  :: ok && (R_K(v) == K_REL || R_K(v) == K_UNDO) ->
       rl = 0; ru = 0; rd = 0
  :: else -> skip
  fi;
  if
  :: R_LIVE(v) && ok -> assert(ans[w] == 0); ans[w] = AN(1, 0, rt, 0)    /* ALL_NEW: the token */
  :: else -> skip
  fi
}

#define DELIVER(x) :: d_step { (net[x] != 0) -> apply(x); gc(); v = 0; w = 0; ok = 0; k = 0 }
#define DROP(x) :: d_step { (DROPS && net[x] != 0) -> take_out(x); gc(); k = 0 }

active proctype store() {
  int v;
  byte w, k, g;
  bit ok;
end:
  do
  DELIVER(0)
#if C > 1
  DELIVER(1)
#endif
#if C > 2
  DELIVER(2)
#endif
#if C > 3
  DELIVER(3)
#endif
  DROP(0)
#if C > 1
  DROP(1)
#endif
#if C > 2
  DROP(2)
#endif
#if C > 3
  DROP(3)
#endif
  od
}

/* ---------------------------------------------------------------- time */
active proctype clock() {
  int v;
  byte i, j, k;
end:
  do
#ifdef LIVENESS
  :: timeout && now < T_MAX ->   /* maximal progress: time moves when nothing else can */
     d_step {
       now++;
       i = 0;
       do :: i < N -> acted[i] = 0; i++ :: else -> break od;
#else
  :: d_step { now < T_MAX ->
       now++;
#endif
       /* canonical forms: values that can no longer make a difference are zeroed */
       i = 0;
       do
       :: i < N ->
#if CLOCK_STEPS == 0
            if :: last[i] < NATURAL(i) -> last[i] = 0 :: else -> skip fi;    /* floor no longer binds */
#else
            if :: last[i] < (now + D) * F -> last[i] = 0 :: else -> skip fi; /* (even after a step back) */
#endif
            if                                  /* the deadline passed: the loss (the heartbeat */
            :: (ph[i] == HOLD || ph[i] == RENEW) && dl[i] <= now && NOT_DEAD(i) ->
                 orphan(i); lose(i)                 /* the body; the scope releases) */
            :: else -> skip
            fi;
            if :: ofirst[i] + D <= now -> ofirst[i] = 0 :: else -> skip fi;   /* ripe stays ripe */
            i++
       :: else -> break
       od;
       i = 0; v = 0; j = 0; k = 0
     }
#if CLOCK_STEPS > 0
  :: nsteps < CLOCK_STEPS ->
       atomic {
         nsteps++;
         i = 0;
         do :: i < N - 1 -> i++ :: break od;      /* any worker ... */
         if :: off[i] = 0 :: off[i] = S fi;       /* ... steps to either end of the band */
         i = 0
       }
#endif
  od
}

/* ---------------------------------------------------------------- workers */
proctype worker(byte i) {
  int v, a;
  byte j, k;

end:
  do
  /* -- obtaining, clock mode: acquire(lease_id, request, max_clock_skew=S) */
  :: d_step { (ph[i] == IDLE && !OBSERVES(i) && rt < TOK_MAX && SPACE && STAMP_OK(i) && ACT(i)) ->
         ACTED(i);
         stamp(i);
         a = (WALL(i) > S * F -> WALL(i) - S * F : 0);   /* :cutoff = clock - skew */
         req[i] = RQ(K_ACQC, i, 0, 0, wu[i], a, 0);
         EV("W%d sends acquire(until %d, cutoff %d)\n", i + 1, wu[i], a);
         put(req[i] + LIVE_BIT);
         ph[i] = ACQ;
         a = 0; v = 0; j = 0; k = 0
       }

  /* -- obtaining, observe mode: a consistent read, then the verdict */
  :: d_step { (ph[i] == IDLE && OBSERVES(i) && ACT(i)) ->
       ACTED(i);
       /* sent, served by the store (a snapshot of the row now), answer read later */
       ans[i] = AN(1, rl, rt, ru);
       ph[i] = READ
     }
  :: d_step { (ph[i] == READ && ans[i] != 0) ->
         a = ans[i]; ans[i] = 0; req[i] = 0;
         if
         :: A_L(a) == 0 ->                                /* Verdict.FREE */
              ol[i] = 0; ot[i] = 0; ou[i] = 0; ofirst[i] = 0;
              ph[i] = TAKEF
         :: A_L(a) != 0 && ol[i] == A_L(a) && ot[i] == A_T(a) && ou[i] == A_U(a) ->
              if
              :: now >= ofirst[i] + D -> ph[i] = TAKER    /* Verdict.RIPE */
              :: else -> ph[i] = IDLE                     /* Verdict.WAIT */
              fi
         :: else ->                                       /* a new state: start counting */
              ol[i] = A_L(a); ot[i] = A_T(a); ou[i] = A_U(a); ofirst[i] = now;
              EV("W%d first sees W%d/token %d/until %d\n", i + 1, ol[i], ot[i], ou[i]);
#if !defined(MUTANT_NO_FORWARD) && !defined(MUTANT_LESSEE_ONLY)
              if   /* already gone from the row: a sighting that can never match again */
              :: !(ol[i] == rl && ot[i] == rt && ou[i] == ru) ->
                   ol[i] = 0; ot[i] = 0; ou[i] = 0; ofirst[i] = 0
              :: else -> skip
              fi;
#endif
              ph[i] = IDLE
         fi;
         a = 0
       }
  :: d_step { ((ph[i] == TAKEF || ph[i] == TAKER) && rt < TOK_MAX && SPACE && STAMP_OK(i)) ->
         stamp(i);
         if
         :: ph[i] == TAKEF -> req[i] = RQ(K_ACQF, i, 0, 0, wu[i], 0, 0)
         :: else -> req[i] = RQ(K_ACQR, i, 0, ot[i], wu[i], ou[i], ol[i])
         fi;
         if
         :: ph[i] == TAKEF -> EV("W%d sends acquire(until %d): the row was free\n", i + 1, wu[i])
         :: else -> EV("W%d sends acquire(until %d): row seen unchanged for D\n", i + 1, wu[i])
         fi;
         put(req[i] + LIVE_BIT);
         ph[i] = ACQ;
         v = 0; j = 0; k = 0
       }
  :: d_step { SAFETY_ONLY(ph[i] == TAKEF || ph[i] == TAKER) -> ph[i] = IDLE }     /* the obtain was cancelled */

  /* -- the acquisition's answer: ours if ok, or refused by our own landed write */
  :: d_step { (ph[i] == ACQ && ans[i] != 0) ->
         a = ans[i];
         if
         :: A_OK(a) -> enter(i, A_T(a))              /* granted, or our own landed write */
         :: else -> ph[i] = IDLE; sent[i] = 0; wu[i] = 0; req[i] = 0; ans[i] = 0
         fi;
         a = 0; v = 0; j = 0; k = 0
       }

  /* -- any call given up by the client (timeout, transient error): the store's retry
        sends the same payload again, the old copy still in flight */
  :: d_step { SAFETY_ONLY((ph[i] == ACQ || ph[i] == RENEW) && SPACE) ->
       EV("W%d gives up waiting, the store retries the same request\n", i + 1);
       orphan(i); put(req[i] + LIVE_BIT); v = 0; j = 0; k = 0 }
  /* ... or the retries are exhausted / the obtain is cancelled: undo in the background */
  :: d_step { SAFETY_ONLY(ph[i] == ACQ) ->
         EV("W%d gives up the acquisition, undo sent\n", i + 1);
         orphan(i);
         if
         :: SPACE -> put(RQ(K_UNDO, i, 0, 0, wu[i], 0, 0))
         :: else -> skip
         fi;
         ph[i] = IDLE; sent[i] = 0; wu[i] = 0; req[i] = 0;
         v = 0; j = 0; k = 0
       }
  :: d_step { SAFETY_ONLY(ph[i] == READ) -> ans[i] = 0; ph[i] = IDLE }     /* read given up */

  /* -- holding: the heartbeat renews with a fresh stamp while before the deadline */
  :: d_step { (ph[i] == HOLD && now < dl[i] && SPACE && STAMP_OK(i) && ACT(i)) ->
         ACTED(i);
         stamp(i);
         req[i] = RQ(K_REN, i, 0, tok[i], wu[i], 0, 0);
         EV("W%d sends renew(token %d, until %d)\n", i + 1, tok[i], wu[i]);
         put(req[i] + LIVE_BIT);
         ph[i] = RENEW;
         v = 0; k = 0
       }
  :: d_step { (ph[i] == RENEW && ans[i] != 0) ->
         a = ans[i];
         if
         :: A_OK(a) && now < dl[i] ->                /* renewed, or our own landed write */
#ifdef MUTANT_DEADLINE_FROM_ANSWER
              dl[i] = now + D - M;
#else
              dl[i] = sent[i] + D - M;
#endif
              ph[i] = HOLD; sent[i] = 0; wu[i] = 0; req[i] = 0; ans[i] = 0;
              EV("W%d renewed, deadline %d\n", i + 1, dl[i]);
              check_work(i)
         :: else -> lose(i)        /* refused by another tenure, or answered too late */
         fi;
         a = 0; v = 0; j = 0; k = 0
       }
  :: d_step { SAFETY_ONLY(ph[i] == RENEW && now < dl[i]) ->         /* LeaseUnavailableError */
       EV("W%d: renewal failed at the client (request still in flight)\n", i + 1);
       orphan(i); ph[i] = HOLD; sent[i] = 0; wu[i] = 0; req[i] = 0; v = 0; j = 0; k = 0 }
  /* -- the deadline passed (heartbeat or timer), or the body exits: stop, release */
  :: d_step { ((ph[i] == HOLD || ph[i] == RENEW) && ACT(i)) ->    /* (at the deadline: the loss) */
       orphan(i); lose(i); v = 0; j = 0; k = 0
#ifdef LIVENESS
       ; ph[i] = DONE                                  /* worked once: out of the game */
#endif
     }
#ifdef LIVENESS
  :: d_step { (ph[i] == HOLD && ACT(i)) -> ACTED(i) }  /* no renewal this tick */
  :: d_step { (dead == 0 && now <= CRASH_BY && (ph[i] == HOLD || ph[i] == RENEW) && ACT(i)) -> dead = i + 1;
       EV("W%d crashes\n", i + 1) } -> break
#endif
  od
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < N ->
         /* wall clocks: only differences matter, and workers of one mode are alike, so
            off[0] = 0 <= off[1] <= ... (mixed mode: worker 0 may be ahead too) */
#if TAKEOVER == 2
         if :: i == 0 -> if :: off[i] = 0 :: off[i] = S fi
            :: i == 1 -> if :: off[i] = 0 :: off[i] = S fi
            :: i > 1 -> if :: off[i] = off[i - 1] :: off[i] = S fi
         fi;
#else
         if :: i == 0 -> off[i] = 0
            :: i > 0 -> if :: off[i] = off[i - 1] :: off[i] = S fi
         fi;
#endif
         run worker(i);
         i++
    :: else -> break
    od;
    i = 0
  }
}
