/*
 * aiolease: session leases (issue 15), as SPIN explores them (docs/protocol.md,
 * "Sessions in the model"). The single-lease protocol of one item is model/lease.pml.
 *
 * WHAT IS MODELLED
 *   One session row K (exists, LeaseToken, LeaseSessionUntil; ProcessID is always the
 *   holder's, LeaseUntil always MAX, so they are not state) and NI items (1 or 2), each
 *   with ProcessID, LeaseToken and LeaseSession (LeaseUntil is MAX while held under K).
 *   The holder H (lessee 1) runs one session:
 *     start  : cond attribute_not_exists(#k); SET #l, #u = MAX, #t = 1, #su = :u
 *              (refused, row shows our lessee, token 1 and our :u -> ours)
 *     renew  : cond #l = :l AND #t = :t AND attribute_type(#su, :n) AND #su < :u
 *              (refused, row shows our lessee, token 1 and our exact :u -> ours; else LOST)
 *     acquire item under K: cond attribute_not_exists(#l) (free); SET #l, #t = #t + 1, #s = K
 *              (refused, row shows our lessee and #s = K -> ours, at the row's token)
 *     release item: cond #l = :l AND #t = :t; REMOVE #l, #s
 *     end (graceful, after releasing its items): cond #l = :l AND #t = :t;
 *              SET #t = #t + 1, #su = 0 (a tombstone)
 *   H works on a held item while now < dl, dl = send time of the last successful start or
 *   renew + D - M (its loop clock); an answer after dl does not revive; at dl every item
 *   scope stops and releases. An item acquisition answered after dl is not entered (it is
 *   undone by a release with the token of the answer).
 *   Takers T1, T2 (lessees 2, 3) read an item (consistent GetItem) and, if it is held
 *   under K, read K and judge it:
 *     DEAD    : row missing, #su = 0 or token != 1      -> take the item
 *     clock   : #su + S < wall clock (after the read returned)        -> end K, then take
 *     observe : (token, #su) seen unchanged for D on the taker's loop clock -> end K, then take
 *     else LIVE / WAIT: read again later
 *     end K (taker): cond #l = :ol AND #t = :ot AND #su = :ou; SET #t = #t + 1, #su = 0
 *     take an item : cond #l = :ol AND #t = :ot AND #s = :os (the item as read, free or
 *                    held under K); SET #l = me, #t = #t + 1, REMOVE #s
 *                    (refused, row shows me and :ot + 1 -> ours)
 *   A taker keeps what it took for the rest of the run (its own lease is model/lease.pml's
 *   business); a free item may be taken by a taker too.
 *
 * ENVIRONMENT
 *   - time: one tick counter `now` (every loop clock); wall clock of H, T1, T2 =
 *     now + off[..], off in 0..S, so wall clocks differ by at most S = max_clock_skew.
 *   - network: a bag of at most C requests in flight, delivered in any order after any
 *     delay, dropped (DROPS), and duplicated the way a retrying client does: a call given
 *     up (timeout, transient error) stays in flight as an orphan and the store's retry
 *     sends the same payload again (so a late duplicate of a retried `start` exists).
 *     Answers wait in a slot per caller (H's session calls, H's calls on item x, each
 *     taker) until read or given up. Releases and the holder's end are sent and forgotten.
 *     Reads are snapshots taken when served; the taker acts on them at any later moment.
 *   - stalls: no fairness in the safety runs; any process may stop for any time, or for
 *     good, between two steps.
 *
 * BOUNDS (defaults below; run.py states the ones of each run)
 *   NI items, NT takers (1 or 2), C requests in flight, T_MAX ticks, TOK_MAX item tokens
 *   (H tries no new acquisition of an item whose token reached it), session duration D,
 *   margin M, skew S in ticks, F fine units per tick, BUMP (the stamp floor, as lease.pml),
 *   RETRIES (0: no call is given up or retried).
 *   The runs of model/run.py (D=4, M=1, S=1, F=1, BUMP=0: one session write stamped per
 *   tick), states stored in docs/protocol.md:
 *     session-clock     NI=1 NT=1 clock   C=2 drops, retries  T_MAX=6 TOK_MAX=2
 *     session-observe   NI=1 NT=1 observe C=1 drops, retries  T_MAX=5 TOK_MAX=2
 *     session-two-items NI=2 NT=1 observe C=1 drops           T_MAX=4 TOK_MAX=1
 *     session-two-takers NI=1 NT=2 mixed  C=1 drops           T_MAX=4 TOK_MAX=1
 *     session-liveness-clock   NI=1 NT=1 clock   C=2 reliable T_MAX=9 CRASH_BY=2
 *     session-liveness-observe NI=2 NT=1 observe C=2 reliable T_MAX=7 CRASH_BY=2
 *   (T_MAX of the liveness runs is the tight bound: one tick less fails.)
 *
 * ABSTRACTED AWAY
 *   - the pool scan and the indexed-layout query: a taker may read any item at any time;
 *   - heartbeat periods: H may renew at any moment before dl;
 *   - an item acquisition given up before its answer (cancelled) is not undone: the row
 *     may stay held by H under K until K ends (the code's undo pins LeaseUntil, which is
 *     MAX for every session item; see docs/protocol.md, "Sessions in the model");
 *   - H's item acquisition reads the item first and pins its token (the expect path);
 *     the named path without expect is MUTANT_NAMED_NO_EXPECT, which fails S1;
 *   - takers' own leases, more than one session, clock steps and rate drift, Go workers.
 *
 * PROPERTIES (assertions; run.py checks which one a mutant violates)
 *   S1 no item is worked on by two workers at once (H under K vs a taker, or two takers):
 *      asserted whenever a worker starts or extends work.
 *   S2 an item held under K is taken only after an end write of K landed (`ended`), and
 *      once K is ended no write to K's row lands again (no renewal revives the tombstone,
 *      no late start re-creates it): asserted in the store.
 *   S3 an item held under K is never taken while H may be working (H in the session and
 *      now < dl): asserted when the take lands.
 *   S4 item tokens of successive holders strictly increase: a worker starts work only
 *      while the row shows its own lessee and token; the store adds 1 per acquisition.
 *   L  (LIVENESS build) under weak fairness, prompt takers and a reliable network, when H
 *      crashes while an item is held under K, K is ended and every item of K is taken
 *      before the last tick T_MAX (run.py sets it to the bound of the clock rule).
 *
 * MUTANTS (-D): MUTANT_TAKE_NO_END (a taker takes an item of an expired session without
 *   ending it), MUTANT_END_UNPINNED (taker's end: #l = :ol AND #t = :ot, without #su),
 *   MUTANT_RENEW_NO_TOKEN (renew: #l = :l AND #su < :u), MUTANT_DELETE (ending deletes the
 *   row instead of writing a tombstone), MUTANT_DEADLINE_FROM_ANSWER (dl from the answer),
 *   MUTANT_NAMED_NO_EXPECT (H acquires an item without reading its token; a retried
 *   refusal showing H under K counts as ours). ONLY_S1 switches off every assertion but S1.
 */

/* ---------------------------------------------------------------- parameters */
#ifndef NI
#define NI 1           /* items */
#endif
#ifndef NT
#define NT 1           /* takers */
#endif
#ifndef C
#define C 2            /* requests in flight */
#endif
#ifndef T_MAX
#define T_MAX 6        /* last tick */
#endif
#ifndef D
#define D 4            /* session duration (ticks) */
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
#ifndef BUMP
#define BUMP 1         /* until floor: at most this many fine units above now + D */
#endif
#ifndef TOK_MAX
#define TOK_MAX 2      /* H acquires an item only while its token is below this */
#endif
#ifndef DROPS
#define DROPS 1
#endif
#ifndef RETRIES
#define RETRIES 1      /* 0: no call is given up or retried (no orphans, no duplicates) */
#endif
#ifndef TMODE
#define TMODE 0        /* takers: 0 clock, 1 observe, 2 mixed (T1 clock, T2 observe) */
#endif

#if TMODE == 0
#define OBSERVES(w) false
#elif TMODE == 1
#define OBSERVES(w) true
#else
#define OBSERVES(w) ((w) == 1)
#endif

#ifdef LIVENESS
#undef DROPS
#define DROPS 0
#define SAFETY_ONLY(x) false
#ifndef CRASH_BY
#define CRASH_BY 1
#endif
#else
#define SAFETY_ONLY(x) x
#endif
#define GIVE_UP(x) (RETRIES && SAFETY_ONLY(x))

#ifdef MUTANT_NAMED_NO_EXPECT
#define NAMED 1
#else
#define NAMED 0
#endif

/* the canonical-form shortcuts below rest on facts a mutant may break */
#if defined(MUTANT_DELETE) || defined(MUTANT_RENEW_NO_TOKEN) || defined(MUTANT_END_UNPINNED)
#define FACTS 0
#else
#define FACTS 1
#endif

/* ------------------------------------------------------------------- state */
byte now;
byte offh;             /* H's wall clock = now + offh */
byte offt[NT];         /* taker w's wall clock = now + offt[w] */

/* session row K */
bit  sx;               /* the row exists */
byte st;               /* LeaseToken: 1 live, 2+ ended (0 while absent) */
byte su;               /* LeaseSessionUntil, fine units; 0 once ended */
bit  ended;            /* ghost: an end write of K landed */

/* items: ProcessID 0 free / 1 H / 2 T1 / 3 T2, LeaseToken, LeaseSession = K */
byte il[NI];
byte it[NI];
bit  is[NI];

/* requests: packed ints, 0 empty, sorted descending (a canonical bag) */
int net[C];
#define K_START 7
#define K_REN   6
#define K_HEND  5
#define K_IACQ  4
#define K_IREL  3
#define K_TEND  2
#define K_TAKE  1
/* c: caller channel, 0 H's session calls, 1 H's item calls (item x), 2 T1, 3 T2 */
#define RQ(k, c, live, x, t, u, e) (((k) << 27) | ((c) << 25) | ((live) << 24) | ((x) << 23) | ((t) << 19) | ((u) << 11) | (e))
#define R_K(v) (((v) >> 27) & 7)
#define R_C(v) (((v) >> 25) & 3)
#define R_LIVE(v) (((v) >> 24) & 1)
#define R_X(v) (((v) >> 23) & 1)
#define R_T(v) (((v) >> 19) & 15)
#define R_U(v) (((v) >> 11) & 255)
#define R_E(v) ((v) & 7)          /* take: expected ProcessID << 1 | LeaseSession */
#define LIVE_BIT (1 << 24)
#define SPACE (net[C - 1] == 0)

/* answers: 0 none; else present, ok, token */
#define AN(ok, t) (256 | ((ok) << 7) | (t))
#define A_OK(a) (((a) >> 7) & 1)
#define A_T(a) ((a) & 127)
int anss;              /* H's session calls */
int ansi[NI];          /* H's calls on item x */
int anst[NT];          /* taker w */

/* holder */
#define H_IDLE  0
#define H_START 1
#define H_LIVE  2
#define H_OUT   3
byte hph;
bit  hr;               /* a renewal outstanding */
byte hdl;              /* local deadline */
byte hsent;            /* loop time of the outstanding session write's stamp */
byte hu;               /* its :u */
byte hlast;            /* the stamp floor */
#define I_NONE 0
#define I_ACQ  1
#define I_HOLD 2
byte hi[NI];           /* H's scope on item x */
byte htok[NI];         /* token held */
int  hreq[NI];          /* the outstanding acquisition of item x, without the live bit */
#define HWORK(x) (hph == H_LIVE && hi[x] == I_HOLD && now < hdl)
#define HMAYWORK (hph == H_LIVE && now < hdl)

/* H's acquisition of an item reads it first (free, token t) and pins t; the named path
   without expect (MUTANT_NAMED_NO_EXPECT) sends at any time, pins nothing, and counts a
   refusal after a retry that shows our lessee and K as ours (LeaseUntil is MAX for every
   session item, so "our exact until" identifies nothing) */
#ifdef MUTANT_NAMED_NO_EXPECT
#define FREE_SEEN(x) true
#else
#define FREE_SEEN(x) (il[x] == 0)
#endif

/* takers */
#define T_IDLE  0
#define T_JUDGE 1      /* K's row read; verdict to take */
#define T_END   2      /* end write to send */
#define T_ENDW  3      /* end write sent */
#define T_TAKE  4      /* take write to send */
#define T_TAKEW 5      /* take write sent */
byte tph[NT];
byte tx[NT];           /* the item */
byte tl[NT];           /* the item as read: ProcessID, token, LeaseSession */
byte tt[NT];
bit  ts[NT];
bit  ox[NT];           /* K as read */
byte ot[NT];
byte ou[NT];
byte th[NT];           /* items held (bit x) */
bit  sg[NT];           /* observe: a sighting of K (token sgt, until sgu) first seen at sgf */
byte sgt[NT];
byte sgu[NT];
byte sgf[NT];
int  treq[NT];         /* the outstanding write, without the live bit */
#define TWORK(w, x) ((th[w] >> (x)) & 1)

#ifdef LIVENESS
bit hacted;
bit tacted[NT];
bit hdead;
#define HACT (!hacted && !hdead)
#define HALIVE (!hdead)
#define HACTED hacted = 1
#define TACT(w) (!tacted[w])
#define TARGET(w, x) (il[x] == 1 && (x == 0 || il[0] != 1))   /* the first of H's */
#define TACTED(w) tacted[w] = 1
#if NI == 1
#define SOME_H_ITEM (il[0] == 1)
#else
#define SOME_H_ITEM (il[0] == 1 || il[1] == 1)
#endif
/* L: once H has crashed with an item held under K, eventually K is ended and no item is
   held by H any more */
ltl p_taken { [] ((hdead && SOME_H_ITEM) -> <> (ended && !SOME_H_ITEM)) }
#else
#define HACT true
#define HALIVE true
#define HACTED skip
#define TACT(w) true
#define TARGET(w, x) (il[x] < 2 && (il[x] == 0 || is[x]))   /* not a taker's */
#define TACTED(w) skip
#endif

#define HWALL ((now + offh) * F)
#define HNATURAL (HWALL + D * F)
#define STAMP_OK (hlast + 1 <= HNATURAL + BUMP)
#define TWALL(w) ((now + offt[w]) * F)

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

/* the client gives up on the live call of channel c (item x): it stays in flight */
#define IS_LIVE(j, c, x) (net[j] != 0 && R_LIVE(net[j]) && R_C(net[j]) == (c) && ((c) != 1 || R_X(net[j]) == (x)))
inline orphan(c, x) {
  j = 0;
  do
  :: j < C && IS_LIVE(j, c, x) -> v = net[j] - LIVE_BIT; take_out(j); put(v); break
  :: j < C && !IS_LIVE(j, c, x) -> j++
  :: j == C -> break
  od
}

inline stamp() {
  hsent = now;
  if
  :: HNATURAL > hlast -> hu = HNATURAL
  :: else -> hu = hlast + 1
  fi;
  hlast = hu;
  assert(hu < 250)
}

/* ---------------------------------------------------------------- properties */
/* S1, checked when H starts or extends work on item x */
inline check_h(x) {
  j = 0;
  do
  :: j < NT -> assert(!TWORK(j, x)); j++        /* S1 */
  :: else -> break
  od
}

/* S1, checked when taker w starts work on item x */
inline check_t(w, x) {
  assert(!HWORK(x));                            /* S1 */
  j = 0;
  do
  :: j < NT -> assert(j == w || !TWORK(j, x)); j++   /* S1 */
  :: else -> break
  od
}

/* ---------------------------------------------------------------- the store */
/* Canonical form: orphans that can never land again are dropped (a drop would do the
   same; nobody reads their answer). Valid only where FACTS hold: a session row, once
   created, stays (tombstones); once ended it never changes; #su only grows while live;
   item tokens only grow. */
#define DEAD_SESSION_WRITE(v) (FACTS && sx && \
  ((R_K(v) == K_START) || \
   (R_K(v) == K_REN && (st != 1 || su >= R_U(v))) || \
   (R_K(v) == K_HEND && st != 1) || \
   (R_K(v) == K_TEND && !(st == R_T(v) && su == R_U(v)))))
#define DEAD_ITEM_WRITE(v) ( \
  (R_K(v) == K_IREL && (it[R_X(v)] > R_T(v) || (it[R_X(v)] == R_T(v) && il[R_X(v)] != 1))) || \
  (R_K(v) == K_TAKE && it[R_X(v)] != R_T(v)) || \
  (R_K(v) == K_IACQ && !NAMED && it[R_X(v)] != R_T(v)))
#define DEAD(v) (!R_LIVE(v) && (DEAD_SESSION_WRITE(v) || DEAD_ITEM_WRITE(v)))

inline gc() {
  g = 0;
  do
  :: g < C && net[g] != 0 && DEAD(net[g]) -> take_out(g)
  :: g < C && !(net[g] != 0 && DEAD(net[g])) -> g++
  :: g == C -> break
  od;
#if FACTS
  /* a sighting of a state K has left can never match again (unless a read of it is
     still to be judged): forget it */
  g = 0;
  do
  :: g < NT ->
       if
       :: sg[g] && !(sx && st == sgt[g] && su == sgu[g]) &&
          !(tph[g] == T_JUDGE && ot[g] == sgt[g] && ou[g] == sgu[g]) ->
            sg[g] = 0; sgt[g] = 0; sgu[g] = 0; sgf[g] = 0
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
  c = R_C(v);
  x = R_X(v);
  ok = 0;
  if
  :: R_K(v) == K_START -> ok = !sx
  :: R_K(v) == K_REN ->
#ifdef MUTANT_RENEW_NO_TOKEN
       ok = (sx && su < R_U(v))
#else
       ok = (sx && st == 1 && su < R_U(v))
#endif
  :: R_K(v) == K_HEND -> ok = (sx && st == 1)
  :: R_K(v) == K_TEND ->
#ifdef MUTANT_END_UNPINNED
       ok = (sx && st == R_T(v))
#else
       ok = (sx && st == R_T(v) && su == R_U(v))
#endif
#ifdef MUTANT_NAMED_NO_EXPECT
  :: R_K(v) == K_IACQ -> ok = (il[x] == 0)
#else
  :: R_K(v) == K_IACQ -> ok = (il[x] == 0 && it[x] == R_T(v))
#endif
  :: R_K(v) == K_IREL -> ok = (il[x] == 1 && it[x] == R_T(v))
  :: R_K(v) == K_TAKE -> ok = (il[x] == (R_E(v) >> 1) && it[x] == R_T(v) && is[x] == (R_E(v) & 1))
  fi;
  if
  :: R_K(v) == K_START -> EV("store %d %d: start(until %d)\n", R_LIVE(v), ok, R_U(v))
  :: R_K(v) == K_REN -> EV("store %d %d: renew(until %d); K was token %d/until %d\n", R_LIVE(v), ok, R_U(v), st, su)
  :: R_K(v) == K_HEND -> EV("store %d %d: H ends K\n", R_LIVE(v), ok)
  :: R_K(v) == K_TEND -> EV("store %d %d: T%d ends K (token %d, until %d); K was token %d/until %d\n", R_LIVE(v), ok, c - 1, R_T(v), R_U(v), st, su)
  :: R_K(v) == K_IACQ -> EV("store %d %d: H acquires item %d under K\n", R_LIVE(v), ok, x)
  :: R_K(v) == K_IREL -> EV("store %d %d: H releases item %d (token %d)\n", R_LIVE(v), ok, x, R_T(v))
  :: R_K(v) == K_TAKE -> EV("store %d %d: T%d takes item %d (token %d)\n", R_LIVE(v), ok, c - 1, x, R_T(v))
  fi;
#ifndef ONLY_S1
  /* S2: once ended, no write to K's row lands again */
  assert(!(ended && ok && (R_K(v) >= K_HEND || R_K(v) == K_TEND)));
#endif
  /* the answer, with the lost-answer reconciliation decided on the request's payload */
  if
  :: R_LIVE(v) ->
       if
       :: c == 0 -> assert(anss == 0);
            if
            :: ok || (sx && st == 1 && su == R_U(v)) -> anss = AN(1, 0)
            :: else -> anss = AN(0, 0)
            fi
       :: c == 1 -> assert(ansi[x] == 0);
            if
            :: ok -> ansi[x] = AN(1, it[x] + 1)
#ifdef MUTANT_NAMED_NO_EXPECT
            :: !ok && R_E(v) && il[x] == 1 && is[x] -> ansi[x] = AN(1, it[x])
#else
            :: !ok && il[x] == 1 && is[x] && it[x] == R_T(v) + 1 -> ansi[x] = AN(1, it[x])
#endif
            :: else -> ansi[x] = AN(0, 0)
            fi
       :: c >= 2 -> assert(anst[c - 2] == 0);
            if
            :: ok && R_K(v) == K_TAKE -> anst[c - 2] = AN(1, it[x] + 1)
            :: ok && R_K(v) == K_TEND -> anst[c - 2] = AN(1, 0)
            :: !ok && R_K(v) == K_TAKE && il[x] == c && it[x] == R_T(v) + 1 -> anst[c - 2] = AN(1, it[x])
            :: else -> anst[c - 2] = AN(0, 0)
            fi
       fi
  :: else -> skip
  fi;
  if
  :: ok && R_K(v) == K_START -> sx = 1; st = 1; su = R_U(v)
  :: ok && R_K(v) == K_REN -> assert(R_U(v) > su); su = R_U(v)
  :: ok && (R_K(v) == K_HEND || R_K(v) == K_TEND) ->
       ended = 1;
#ifdef MUTANT_DELETE
       sx = 0; st = 0; su = 0
#else
       st++; su = 0
#endif
  :: ok && R_K(v) == K_IACQ -> il[x] = 1; it[x]++; is[x] = 1
  :: ok && R_K(v) == K_IREL -> il[x] = 0; is[x] = 0
  :: ok && R_K(v) == K_TAKE ->
       if
       :: is[x] ->
#ifndef ONLY_S1
            assert(ended);                 /* S2: K's end write landed before */
            assert(!HMAYWORK);             /* S3: H cannot be working under K */
#endif
            skip
       :: else -> skip
       fi;
       il[x] = c; it[x]++; is[x] = 0
  :: else -> skip
  fi;
  assert(st < 8 && it[x] < 15)
}

#define DELIVER(n) :: d_step { (net[n] != 0) -> apply(n); gc(); v = 0; c = 0; x = 0; ok = 0; k = 0; j = 0 }
#define DROP(n) :: d_step { (DROPS && net[n] != 0) -> take_out(n); gc(); k = 0 }

active proctype store() {
  int v;
  byte c, x, k, g, j;
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
  DROP(0)
#if C > 1
  DROP(1)
#endif
#if C > 2
  DROP(2)
#endif
  od
}

/* ---------------------------------------------------------------- H loses the session */
/* every item scope stops and releases (the release may not be sent: no room, timed out) */
inline h_lose() {
  EV("H: session lost or ended, work stops\n");
  x = 0;
  do
  :: x < NI ->
       if
       :: hi[x] == I_HOLD && SPACE -> put(RQ(K_IREL, 1, 0, x, htok[x], 0, 0))
       :: else -> skip
       fi;
       if
       :: hi[x] == I_ACQ -> orphan(1, x); ansi[x] = 0
       :: else -> skip
       fi;
       hi[x] = I_NONE; htok[x] = 0; hreq[x] = 0;
       x++
  :: else -> break
  od;
  orphan(0, 0); anss = 0;
  hph = H_OUT; hr = 0; hdl = 0; hsent = 0; hu = 0;
  x = 0
}

/* ---------------------------------------------------------------- time */
active proctype clock() {
  byte x, j, k;
  int v;
end:
  do
#ifdef LIVENESS
  :: timeout && now < T_MAX ->
     /* the one crash of H (it stops for good) happens at a tick's end, if at all */
     if
     :: !hdead && hph == H_LIVE && now <= CRASH_BY -> hdead = 1; EV("H crashes\n")
     :: true -> skip
     fi;
     d_step {
       now++;
       hacted = 0;
       j = 0;
       do :: j < NT -> tacted[j] = 0; j++ :: else -> break od;
#else
  :: d_step { now < T_MAX ->
       now++;
#endif
       if :: hlast < HNATURAL -> hlast = 0 :: else -> skip fi;   /* the floor no longer binds */
       if
       :: hph == H_LIVE && hdl <= now && HALIVE -> h_lose()                                 /* the deadline passed */
       :: else -> skip
       fi;
       j = 0;
       do
       :: j < NT -> if :: sg[j] && sgf[j] + D <= now -> sgf[j] = 0 :: else -> skip fi; j++
       :: else -> break
       od;
       x = 0; j = 0; k = 0; v = 0
     }
  od
}

/* the answer of an acquisition of item x under K */
inline item_answered() {
  a = ansi[x]; ansi[x] = 0;
  if
  :: A_OK(a) && hph == H_LIVE && now < hdl ->
       hi[x] = I_HOLD; htok[x] = A_T(a);
       EV("H starts work on item %d, token %d, deadline %d\n", x, htok[x], hdl);
       check_h(x);
#ifndef ONLY_S1
       assert(il[x] == 1 && it[x] == htok[x] && is[x]);   /* S4 */
#endif
       skip
  :: A_OK(a) && !(hph == H_LIVE && now < hdl) ->
       /* answered after the deadline: not entered, undone with the token it carries */
       if :: SPACE -> put(RQ(K_IREL, 1, 0, x, A_T(a), 0, 0)) :: else -> skip fi;
       hi[x] = I_NONE
  :: else -> hi[x] = I_NONE
  fi;
  hreq[x] = 0; a = 0; x = 0; j = 0; v = 0; k = 0
}

/* an acquisition of item x given up: the store retries it (same payload) ... */
inline item_retry() {
  EV("H gives up waiting on item %d, the store retries\n", x);
  orphan(1, x); ansi[x] = 0; hreq[x] = hreq[x] | NAMED; put(hreq[x] + LIVE_BIT);   /* (bit 0: retried) */
  x = 0; j = 0; v = 0; k = 0
}

/* ... or the scope is cancelled (the request stays in flight) */
inline item_cancel() {
  EV("H cancels acquiring item %d (in flight)\n", x);
  orphan(1, x); ansi[x] = 0; hi[x] = I_NONE; hreq[x] = 0;
  x = 0; j = 0; v = 0; k = 0
}

/* the item scope's body exits: release (sent and forgotten; maybe not sent at all) */
inline item_release() {
  EV("H releases item %d (token %d)\n", x, htok[x]);
  if :: SPACE -> put(RQ(K_IREL, 1, 0, x, htok[x], 0, 0)) :: else -> skip fi;
  hi[x] = I_NONE; htok[x] = 0;
  x = 0; j = 0; v = 0; k = 0
}

/* ---------------------------------------------------------------- the holder */
active proctype holder() {
  byte x, j, k;
  int v, a;
end:
  do
  :: d_step { (hph == H_IDLE && SPACE && HACT) ->
       HACTED;
       stamp();
       EV("H sends start(until %d)\n", hu);
       put(RQ(K_START, 0, 1, 0, 0, hu, 0));
       hph = H_START; v = 0; k = 0 }
  :: d_step { (hph == H_START && anss != 0 && HALIVE) ->
       a = anss; anss = 0;
       if
       :: A_OK(a) ->
#ifdef MUTANT_DEADLINE_FROM_ANSWER
            hdl = now + D - M;
#else
            hdl = hsent + D - M;
#endif
            if
            :: now < hdl -> hph = H_LIVE; EV("H: session started, deadline %d\n", hdl)
            :: else -> h_lose()               /* answered after its deadline: not entered */
            fi
       :: else -> h_lose()
       fi;
       hsent = 0; hu = 0; a = 0 }
  /* a session call given up: the store's retry sends the same payload again */
  :: d_step { GIVE_UP((hph == H_START || hr) && SPACE) ->
       EV("H gives up waiting, the store retries the same request\n");
       orphan(0, 0); anss = 0;
       if
       :: hph == H_START -> put(RQ(K_START, 0, 1, 0, 0, hu, 0))
       :: else -> put(RQ(K_REN, 0, 1, 0, 0, hu, 0))
       fi;
       v = 0; j = 0; k = 0 }
  :: d_step { GIVE_UP(hph == H_START) -> orphan(0, 0); h_lose(); v = 0; j = 0; k = 0 }   /* start failed */
  :: d_step { GIVE_UP(hr) ->                                   /* LeaseUnavailableError */
       orphan(0, 0); anss = 0; hr = 0; hsent = 0; hu = 0; v = 0; j = 0; k = 0 }

  /* the heartbeat: a renewal with a fresh stamp, while before the deadline */
  :: d_step { (hph == H_LIVE && !hr && now < hdl && SPACE && STAMP_OK && HACT) ->
       HACTED;
       stamp();
       EV("H sends renew(until %d)\n", hu);
       put(RQ(K_REN, 0, 1, 0, 0, hu, 0));
       hr = 1; v = 0; k = 0 }
  :: d_step { (hph == H_LIVE && hr && anss != 0 && HALIVE) ->
       a = anss; anss = 0;
       if
       :: A_OK(a) && now < hdl ->
#ifdef MUTANT_DEADLINE_FROM_ANSWER
            hdl = now + D - M;
#else
            hdl = hsent + D - M;
#endif
            hr = 0; hsent = 0; hu = 0;
            EV("H renewed, deadline %d\n", hdl);
            x = 0;
            do
            :: x < NI -> if :: hi[x] == I_HOLD -> check_h(x) :: else -> skip fi; x++
            :: else -> break
            od
       :: else -> h_lose()                 /* refused: the session is lost */
       fi;
       a = 0; x = 0; j = 0; v = 0; k = 0 }

  /* items under the session */
  :: d_step { (hph == H_LIVE && now < hdl && hi[0] == I_NONE && FREE_SEEN(0) && it[0] < TOK_MAX && SPACE && HACT) ->
       HACTED; EV("H sends acquire item 0 under K (token read %d)\n", it[0]);
       hreq[0] = RQ(K_IACQ, 1, 0, 0, it[0], 0, 0);
       put(hreq[0] + LIVE_BIT); hi[0] = I_ACQ; k = 0 }
#if NI > 1
  :: d_step { (hph == H_LIVE && now < hdl && hi[1] == I_NONE && FREE_SEEN(1) && it[1] < TOK_MAX && SPACE && HACT) ->
       HACTED; EV("H sends acquire item 1 under K (token read %d)\n", it[1]);
       hreq[1] = RQ(K_IACQ, 1, 0, 1, it[1], 0, 0);
       put(hreq[1] + LIVE_BIT); hi[1] = I_ACQ; k = 0 }
#endif
  :: d_step { (hi[0] == I_ACQ && ansi[0] != 0 && HALIVE) -> x = 0; item_answered() }
#if NI > 1
  :: d_step { (hi[1] == I_ACQ && ansi[1] != 0 && HALIVE) -> x = 1; item_answered() }
#endif
  :: d_step { GIVE_UP(hi[0] == I_ACQ && SPACE) -> x = 0; item_retry() }
  :: d_step { GIVE_UP(hi[0] == I_ACQ) -> x = 0; item_cancel() }
#if NI > 1
  :: d_step { GIVE_UP(hi[1] == I_ACQ && SPACE) -> x = 1; item_retry() }
  :: d_step { GIVE_UP(hi[1] == I_ACQ) -> x = 1; item_cancel() }
#endif
  :: d_step { (hi[0] == I_HOLD && HACT) -> x = 0; HACTED; item_release() }
#if NI > 1
  :: d_step { (hi[1] == I_HOLD && HACT) -> x = 1; HACTED; item_release() }
#endif

  /* leaving the session scope: release the items, then end K (a tombstone) */
  :: d_step { (hph == H_LIVE && hi[0] != I_ACQ
#if NI > 1
              && hi[1] != I_ACQ
#endif
              && HACT) ->
       HACTED;
       EV("H leaves the session: releases its items and ends K\n");
       h_lose();
       if :: SPACE -> put(RQ(K_HEND, 0, 0, 0, 1, 0, 0)) :: else -> skip fi;
       x = 0; j = 0; v = 0; k = 0 }
#ifdef LIVENESS
  :: d_step { (hph == H_LIVE && HACT) -> HACTED }         /* nothing this tick */
#endif
  od
}

/* ---------------------------------------------------------------- takers */
/* taker w reads item x (a consistent GetItem: a snapshot) and, if it is held under K,
   K's row */
inline t_read() {
  TACTED(w);
  tx[w] = x; tl[w] = il[x]; tt[w] = it[x]; ts[w] = is[x];
  if
  :: tl[w] == 0 -> tph[w] = T_TAKE
  :: else -> ox[w] = sx; ot[w] = st; ou[w] = su; tph[w] = T_JUDGE
  fi;
  x = 0
}

proctype taker(byte w) {
  byte x, j, k;
  int v, a;
end:
  do
  /* read an item (a consistent GetItem, a snapshot); held under K: read K too */
  :: d_step { (tph[w] == T_IDLE && TACT(w) && TARGET(w, 0)) -> x = 0; t_read() }
#if NI > 1
  :: d_step { (tph[w] == T_IDLE && TACT(w) && TARGET(w, 1)) -> x = 1; t_read() }
#endif
  /* the verdict on K, at any moment after the read returned */
  :: d_step { (tph[w] == T_JUDGE) ->
       if
       :: !ox[w] || ou[w] == 0 || ot[w] != 1 -> tph[w] = T_TAKE     /* DEAD */
       :: else ->
            if
            :: !OBSERVES(w) && ou[w] + S * F < TWALL(w) ->          /* expired by the clock */
                 EV("T%d: K expired by the clock (until %d)\n", w + 1, ou[w]);
#ifdef MUTANT_TAKE_NO_END
                 tph[w] = T_TAKE
#else
                 tph[w] = T_END
#endif
            :: OBSERVES(w) && sg[w] && sgt[w] == ot[w] && sgu[w] == ou[w] && now >= sgf[w] + D ->
                 EV("T%d: K unchanged for D (until %d)\n", w + 1, ou[w]);
#ifdef MUTANT_TAKE_NO_END
                 tph[w] = T_TAKE
#else
                 tph[w] = T_END
#endif
            :: OBSERVES(w) && !(sg[w] && sgt[w] == ot[w] && sgu[w] == ou[w]) ->
                 sg[w] = 1; sgt[w] = ot[w]; sgu[w] = ou[w]; sgf[w] = now;   /* first seen */
#if FACTS
                 if   /* already gone from the row: can never match again */
                 :: !(sx && st == sgt[w] && su == sgu[w]) -> sg[w] = 0; sgt[w] = 0; sgu[w] = 0; sgf[w] = 0
                 :: else -> skip
                 fi;
#endif
                 tph[w] = T_IDLE
            :: else -> tph[w] = T_IDLE                               /* LIVE / WAIT */
            fi
       fi;
       if
       :: tph[w] == T_IDLE || tph[w] == T_TAKE -> ox[w] = 0; ot[w] = 0; ou[w] = 0
       :: else -> skip
       fi;
       if
       :: tph[w] == T_IDLE -> tl[w] = 0; tt[w] = 0; ts[w] = 0; tx[w] = 0
       :: else -> skip
       fi
     }
  :: d_step { (tph[w] == T_END && SPACE) ->
       treq[w] = RQ(K_TEND, w + 2, 0, 0, ot[w], ou[w], 0);
       EV("T%d sends end K (token %d, until %d)\n", w + 1, ot[w], ou[w]);
       put(treq[w] + LIVE_BIT); tph[w] = T_ENDW; k = 0 }
  :: d_step { (tph[w] == T_TAKE && SPACE) ->
       treq[w] = RQ(K_TAKE, w + 2, 0, tx[w], tt[w], 0, (tl[w] << 1) | ts[w]);
       EV("T%d sends take item %d (as read: lessee %d, token %d)\n", w + 1, tx[w], tl[w], tt[w]);
       put(treq[w] + LIVE_BIT); tph[w] = T_TAKEW; k = 0 }
  :: d_step { (tph[w] == T_ENDW && anst[w] != 0) ->
       a = anst[w]; anst[w] = 0; treq[w] = 0;
       ox[w] = 0; ot[w] = 0; ou[w] = 0;
       if
       :: A_OK(a) -> tph[w] = T_TAKE
       :: else -> tph[w] = T_IDLE; tl[w] = 0; tt[w] = 0; ts[w] = 0; tx[w] = 0   /* read again */
       fi;
       a = 0 }
  :: d_step { (tph[w] == T_TAKEW && anst[w] != 0) ->
       a = anst[w]; anst[w] = 0; treq[w] = 0;
       if
       :: A_OK(a) ->
            x = tx[w];
            EV("T%d starts work on item %d, token %d\n", w + 1, x, A_T(a));
            check_t(w, x);
#ifndef ONLY_S1
            assert(il[x] == w + 2 && it[x] == A_T(a));          /* S4 */
#endif
            th[w] = th[w] | (1 << x)
       :: else -> skip
       fi;
       tph[w] = T_IDLE; tl[w] = 0; tt[w] = 0; ts[w] = 0; tx[w] = 0;
       a = 0; x = 0; j = 0 }
  /* a write given up: the store's retry sends the same payload; or the obtain gives up */
  :: d_step { GIVE_UP((tph[w] == T_ENDW || tph[w] == T_TAKEW) && SPACE) ->
       orphan(w + 2, 0); anst[w] = 0; put(treq[w] + LIVE_BIT); v = 0; j = 0; k = 0 }
  :: d_step { GIVE_UP(tph[w] == T_ENDW || tph[w] == T_TAKEW) ->
       orphan(w + 2, 0); anst[w] = 0; treq[w] = 0;
       tph[w] = T_IDLE; tl[w] = 0; tt[w] = 0; ts[w] = 0; tx[w] = 0;
       ox[w] = 0; ot[w] = 0; ou[w] = 0; v = 0; j = 0; k = 0 }
  :: d_step { SAFETY_ONLY(tph[w] == T_END || tph[w] == T_TAKE || tph[w] == T_JUDGE) ->
       tph[w] = T_IDLE; tl[w] = 0; tt[w] = 0; ts[w] = 0; tx[w] = 0;
       ox[w] = 0; ot[w] = 0; ou[w] = 0 }
  od
}

init {
  byte w;
  atomic {
    /* wall clocks: each of H and the takers at either end of the skew band */
    if :: offh = 0 :: offh = S fi;
    w = 0;
    do
    :: w < NT ->
         if
         :: w == 0 || OBSERVES(w) != OBSERVES(w - 1) -> if :: offt[w] = 0 :: offt[w] = S fi
         :: else -> if :: offt[w] = offt[w - 1] :: offt[w] = S fi   /* alike takers: sorted */
         fi;
         run taker(w);
         w++
    :: else -> break
    od;
    w = 0
  }
}
