/*
 * aio-notify.pml -- Promela model of aioloop's AioContext notify protocol
 * (aio_notify() / aio_poll() / aio_notify_accept(); src/core).
 *
 * Run it with tests/model/run-spin.sh, or by hand:
 *
 *     spin -a [-DBUG1 | -DBUG2 [-DBUG2_FENCED]] aio-notify.pml
 *     gcc -O1 -DSAFETY -o pan pan.c
 *     ./pan                     # "errors: 0" for the correct protocol
 *     spin -t -p aio-notify.pml # (plus the same -D flags) replays a trail
 *
 * ------------------------------------------------------------------------
 * Shared state (struct AioContext, src/core/aio-internal.h)
 *
 *   notify_me  counter; aio_poll() adds 2 while it may block.  Written only
 *              by the home thread, read by every aio_notify().
 *   notified   bool; "some aio_notify() happened since the last
 *              aio_notify_accept()".
 *   event      the context's EventNotifier (an eventfd): a flag that a
 *              blocked poller waits on.  event_notifier_set() sets it, the
 *              notifier's own read handler (event_notifier_test_and_clear)
 *              clears it.  The fd monitor's wait only *reports* it ready.
 *   req        the work item, e.g. a bottom half's SCHEDULED flag.  It is a
 *              flag, not a counter: publishing it while it is already set
 *              coalesces with the pending request (qemu_bh_schedule on an
 *              already scheduled BH), and consuming it is an atomic
 *              test-and-clear (the fetch_and in the BH dispatch).
 *
 * Processes
 *
 *   producer  (NPROD of them, any thread): publishes the work NPUB times,
 *             each time followed by aio_notify().  Producers never block,
 *             and they terminate.
 *   consumer  (one, the home thread): loops over aio_poll(blocking=true)
 *             iterations forever.
 *
 * Memory model.  Promela is sequentially consistent and every Promela
 * statement is one atomic step.  That is exact for the correct protocol:
 * every place where a store is followed by a load of *another* variable
 * that matters (producer: notified=true; smp_mb(); read notify_me --
 * consumer: notify_me+=2; smp_mb(); read notified -- consumer:
 * notified=false; smp_mb(); read req) has a full barrier between them, and
 * smp_wmb()/release orders the remaining store->store pairs.  The one
 * reordering that the barriers still allow on the consumer side, the
 * store-release of notify_me-=2 becoming visible late, only makes
 * producers see notify_me != 0 for longer, i.e. causes extra event_set()s,
 * which is harmless.  Where a variant drops a barrier (BUG2), the model
 * explicitly lets the unordered load happen before the store, as TSO (x86)
 * and weaker hardware do.
 *
 * ------------------------------------------------------------------------
 * Property checked: no lost wake-up, i.e. every published request is
 * eventually consumed.
 *
 * It is checked as a SAFETY property, with Spin's predefined `timeout`
 * variable: while the consumer waits for the event (step 3, blocking) it
 * also offers a `timeout` branch.  `timeout` becomes true only when no
 * statement anywhere in the system is executable -- which here means that
 * every producer has terminated (producers never block) and the consumer
 * waits on event == 0.  Nothing can set the event any more, so the consumer
 * is blocked forever; at that point we assert(!req).  If the assertion
 * holds the system is legitimately idle and the consumer stops (a valid end
 * state).  Any other place where the system could get stuck is reported by
 * pan as an invalid end state, since no other state carries an end label.
 *
 * Why this is sound and complete for lost wake-ups in this (finite) model:
 *  - An assertion failure is a real lost wake-up: req is pending, the
 *    consumer sleeps, nobody will ever wake it.
 *  - Conversely, suppose some published request is never consumed.  req is
 *    a flag, so req stays 1 from then on.  A consumer that is not blocked
 *    consumes a pending req within one iteration (step 1 sees it and makes
 *    the iteration non-blocking, step 6 consumes it; if a producer set it
 *    after step 1, the next iteration does).  So the consumer must block in
 *    step 3 with req == 1 and never be woken.  Producers are finite and
 *    never block, so they all terminate, and then `timeout` is true with
 *    req == 1: the assertion fails.  (No fairness assumption is needed: the
 *    only runs that avoid termination of the producers are runs in which
 *    the consumer keeps running, which keep consuming req.)
 * Because req is a flag, "req == 0 at quiescence" is exactly "every
 * publish was followed by a consumption": each publish sets req = 1, and
 * only a consumption clears it.
 *
 * An LTL formulation ([] (req -> <> !req)) would need a liveness search
 * (acceptance cycles, a never claim, stutter semantics at the deadlock)
 * and is more expensive for the same verdict; the safety form also gives
 * short, readable counterexample trails.
 *
 * ------------------------------------------------------------------------
 * Variants (select with spin -D...):
 *
 *   (none)  the protocol as implemented.  Expected: no error.
 *
 *   BUG1    aio_notify() checks notify_me and sets the event *before*
 *           setting notified:
 *               if (notify_me) event_set();  notified = true;
 *           The pairing with aio_poll() is a Dekker-style handshake: the
 *           producer must store notified and then load notify_me, the
 *           consumer stores notify_me and then loads notified; with both
 *           store->load orders, at least one side sees the other.  BUG1
 *           loads notify_me *before* storing notified, so: producer reads
 *           notify_me == 0 (consumer not yet blocking) -> consumer adds 2
 *           and reads notified == false -> producer sets notified (too
 *           late) -> consumer blocks with req pending, no event.  Lost
 *           wake-up.
 *           (QEMU's docs/spin/aio_notify_accept.promela has a BUG1 about
 *           the order of "notified = 1" and "event = 1".  That model is of
 *           the older protocol where aio_notify_accept() cleared the event
 *           when notified was set, which made the two orders differ; in the
 *           protocol modelled here aio_notify_accept() never touches the
 *           event -- the notifier's handler clears it -- so the ordering
 *           that matters is the one between notified and notify_me, above.)
 *
 *   BUG2    aio_notify() skips the notification when notified is already
 *           true (the "optimisation" QEMU's BUG2 warns about):
 *               smp_wmb();
 *               if (qatomic_read(&notified)) return;   -- "already notified"
 *               notified = true; smp_mb(); if (notify_me) event_set();
 *           smp_wmb() orders stores only: the load of notified is NOT
 *           ordered after the store that published req, and on x86 (store
 *           buffer) or ARM it can be satisfied first.  Then: producer reads
 *           a stale notified == true -> consumer's aio_notify_accept()
 *           clears notified, dispatch finds no new req, the next iteration
 *           sees req == 0 and notified == false and blocks -> producer's req
 *           store becomes visible, but it has already decided to skip.
 *           Lost wake-up.  The model lets the load happen either before or
 *           after the store.
 *
 *   BUG2 + BUG2_FENCED
 *           the same shortcut with the load ordered after the req store
 *           (smp_mb() before the load, or qatomic_xchg(&notified, true);
 *           the model uses a separate load and store, which allows more
 *           interleavings than the xchg would).  Under
 *           sequential consistency Spin finds NO lost wake-up: a producer
 *           that sees notified == true knows that the consumer has not yet
 *           run the aio_notify_accept() that will precede its next look at
 *           req, and the producer that made notified true did (or will do)
 *           the event_set() if the consumer was already committed to
 *           blocking.  So, in this protocol, where the event is cleared by
 *           its handler and not by aio_notify_accept(), the shortcut is
 *           only broken by the missing store->load ordering.  (In QEMU's
 *           model it breaks for a different reason: there accept cleared
 *           the event whenever notified was set.)  run-spin.sh checks this
 *           too, so the claim stays verified; the C code keeps the
 *           unconditional aio_notify() anyway.
 * ------------------------------------------------------------------------
 */

#ifndef NPROD
#define NPROD 2         /* producer threads */
#endif
#ifndef NPUB
#define NPUB 2          /* publications per producer */
#endif

byte notify_me;         /* AioContext.notify_me */
bool notified;          /* AioContext.notified */
bool event;             /* AioContext.notifier (eventfd readable) */
bool req;               /* the work item, e.g. QEMUBH SCHEDULED */
byte consumed;          /* requests run by the consumer (statistics) */

/* if (notify_me != 0) event_notifier_set(); -- load, then (later) store */
#define EVENT_SET_IF_POLLER_MAY_BLOCK \
    if                                \
    :: notify_me != 0 -> event = 1    \
    :: else -> skip                   \
    fi

/*
 * Producer: e.g. qemu_bh_schedule() from any thread.
 *   1. req = 1                      publish the work (release)
 *   2. aio_notify()
 */
active [NPROD] proctype producer()
{
    byte i = 0;
#ifdef BUG2
    bool old;
#endif

    do
    :: i < NPUB ->
#if defined(BUG1)
        req = 1;
        /* BUG1: load notify_me (and maybe set the event) before notified */
        EVENT_SET_IF_POLLER_MAY_BLOCK;
        notified = 1;
#elif defined(BUG2)
        /* BUG2: "if (notified) return;" shortcut */
#ifdef BUG2_FENCED
        req = 1;
        old = notified;         /* load ordered after the req store */
#else
        if
        :: req = 1; old = notified      /* program order */
        :: old = notified; req = 1      /* load passes the store (TSO, ARM) */
        fi;
#endif
        if
        :: old -> skip                  /* "already notified": skip it all */
        :: else ->
            notified = 1;               /* smp_wmb(); notified = true; */
            EVENT_SET_IF_POLLER_MAY_BLOCK   /* smp_mb(); if (notify_me) set */
        fi;
#else
        /* correct protocol */
        req = 1;                        /* 1. publish (release store) */
        notified = 1;                   /* 2. smp_wmb(); notified = true; */
        EVENT_SET_IF_POLLER_MAY_BLOCK;  /*    smp_mb(); if (notify_me) set */
#endif
        i++
    :: else -> break
    od
}

/*
 * Consumer: the home thread, aio_poll(ctx, blocking=true) forever.
 */
active proctype consumer()
{
    bool may_block;     /* timeout != 0 */
    bool did_inc;       /* this iteration added 2 to notify_me */
    bool ready;         /* the fd monitor reported the event fd readable */

    do
    :: true ->
        /* 1. timeout = aio_compute_timeout(): 0 if a BH is pending */
        if
        :: req -> may_block = 0
        :: else -> may_block = 1
        fi;

        /*
         * 2. if (timeout != 0) {
         *        notify_me += 2; smp_mb();
         *        if (notified) timeout = 0;
         *    }
         */
        did_inc = may_block;
        if
        :: did_inc ->
            notify_me = notify_me + 2;
            if
            :: notified -> may_block = 0
            :: else -> skip
            fi
        :: else -> skip
        fi;

        /*
         * 3. fd monitor wait.  Blocking: sleep until the event is set; it is
         *    reported ready but not cleared.  Non-blocking (timeout == 0):
         *    just sample it.
         */
        if
        :: may_block ->
            if
            :: event -> ready = 1
            :: timeout ->
                /*
                 * Nothing in the system can run any more: every producer
                 * has finished and the event is clear, so we sleep forever.
                 * That is only fine if no work is pending.
                 */
                assert(!req);           /* else: lost wake-up */
                goto idle
            fi
        :: else -> ready = event
        fi;

        /* 4. if (did step 2) notify_me -= 2;  (store-release) */
        if
        :: did_inc -> notify_me = notify_me - 2
        :: else -> skip
        fi;

        /* 5. aio_notify_accept(): notified = false; smp_mb(); */
        notified = 0;

        /*
         * 6. dispatch.  The context's own notifier handler clears the event
         *    if it was reported ready (event_notifier_test_and_clear), then
         *    the BH runs if it is scheduled (atomic test-and-clear).
         */
        if
        :: ready -> event = 0
        :: else -> skip
        fi;
        atomic {
            if
            :: req -> req = 0; consumed++
            :: else -> skip
            fi
        }
    od;

idle:
    /* Sanity: work was published, so some of it must have been run. */
    assert(consumed > 0)
}
