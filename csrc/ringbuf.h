/*
 * ringbuf.h - a bounded FIFO of 64-bit tokens shared by many threads.
 *
 * taskorbit keeps Python objects in a dict and moves only integer tokens through
 * this ring, so C never owns a Python reference. The design follows Linux kfifo
 * and DPDK rte_ring: a power-of-two array indexed by free-running positions.
 *
 * Invariants (all hold whenever `lock` is not held):
 *   - capacity = mask + 1 is a power of two, 1 <= capacity <= RING_MAX_CAPACITY.
 *   - head is the position of the next push, tail the position of the next pop.
 *     Both only ever grow and are never reduced modulo anything.
 *   - used = head - tail (unsigned subtraction), 0 <= used <= capacity.
 *   - the token at position p lives in slots[p & mask]; positions [tail, head)
 *     hold the stored tokens, oldest at tail.
 *   - length (atomic) == used; high_water >= used.
 *
 * Wrap-around: positions are 64-bit, so at 10^9 pushes per second they wrap
 * after about 584 years; in practice they never do. The code is still correct
 * under wrap, because it only ever uses differences (head - tail) and masks,
 * which unsigned arithmetic keeps exact modulo 2^64 while used <= capacity
 * < 2^63. ring_new_at() starts the positions anywhere so tests can cross
 * 2^32 and 2^64 on purpose.
 *
 * Return codes: every call returns a count (>= 0) or a negative errno; nothing
 * aborts or prints.
 *   -EINVAL     a bad argument (capacity 0 or too large, unknown policy, NULL
 *               buffer where one is required).
 *   -ENOMEM     ring_new could not allocate.
 *   -EPIPE      the ring is closed: no push is accepted, and a pop finds it
 *               closed AND empty (a pop after close first drains what is left).
 *   0           from a call that waits: the timeout expired with nothing done
 *               (ring_pop_one, whose result is a token, says -ETIMEDOUT).
 *   Other pthread errors are returned negated as they are (none is expected).
 *
 * Timeouts are in nanoseconds on CLOCK_MONOTONIC: -1 (any negative value)
 * waits forever, 0 does not wait, > 0 waits at most that long.
 *
 * Concurrency: cffi's API mode releases the GIL around every call, so any
 * number of threads may call any function on the same ring at the same time,
 * except ring_free, which must be the last call (no other call in progress).
 * One mutex, `lock`, guards head, tail, the slots, the waiter counts and the
 * counters. Two condition variables wait on it: not_empty (pop_n) and not_full
 * (push_n with BLOCK, wait_not_full). ring_len and ring_is_closed read atomic
 * copies without taking the lock; they are snapshots, stale as soon as read.
 * Those copies are written under the lock and publish nothing else (no slot is
 * read without the lock), so all atomic accesses are relaxed: there are no
 * acquire/release pairs, by design. See the top of ringbuf.c.
 */
#ifndef TASKORBIT_RINGBUF_H
#define TASKORBIT_RINGBUF_H

#include <stddef.h>
#include <stdint.h>

/* 2^31 slots of 8 bytes is 16 GiB; anything larger is surely a mistake. */
#define RING_MAX_CAPACITY (UINT64_C(1) << 31)

/* What push_n does with tokens that do not fit. Values are part of the ABI. */
enum ring_policy {
    RING_BLOCK = 0,       /* wait for room up to the timeout; store what fits as room appears */
    RING_DROP_NEWEST = 1, /* store what fits now; hand back the new tokens that do not fit */
    RING_DROP_OLDEST = 2, /* evict the oldest stored tokens to make room; hand them back */
    RING_REJECT = 3,      /* store the whole batch if it fits now, else none of it */
};

typedef struct ring ring_t; /* opaque: cffi never sees the _Atomic fields */

typedef struct ring_stats {
    uint64_t enqueued;   /* tokens stored by push_n */
    uint64_t dequeued;   /* tokens taken by pop_n */
    uint64_t dropped;    /* tokens handed back by DROP_NEWEST and DROP_OLDEST */
    uint64_t rejected;   /* tokens handed back by REJECT and by BLOCK on timeout */
    uint64_t high_water; /* the largest length ever reached */
    uint64_t length;     /* tokens stored now */
    uint64_t capacity;   /* slots, a power of two */
} ring_stats_t;

/* Allocate a ring of at least `capacity` slots (rounded up to a power of two).
 * Returns 0 and sets *out, or -EINVAL / -ENOMEM. */
int ring_new(uint64_t capacity, ring_t **out);

/* As ring_new, with head = tail = start_pos. A test hook for wrap-around. */
int ring_new_at(uint64_t capacity, uint64_t start_pos, ring_t **out);

/* Release the ring. No other call may be in progress or follow. */
void ring_free(ring_t *r);

/* Store up to n tokens, in order, under one lock acquisition per wait.
 * Returns the number of tokens stored, or -EPIPE if the ring was closed before
 * any was stored, or -EINVAL.
 * Tokens not stored, and under DROP_OLDEST the stored tokens evicted, are
 * "handed back": if out_dropped is not NULL they are copied there (oldest
 * first; it needs room for n tokens; at most n are ever handed back) and
 * *out_dropped_n is set to their number. out_dropped is required for
 * DROP_OLDEST; for the other policies the tokens handed back are always
 * tokens[returned .. n), so it may be NULL.
 * BLOCK stores what fits, wakes consumers, and waits for more room until all
 * are stored, the timeout expires (returns fewer than n) or the ring closes
 * (returns what was stored before; the rest are not stored). */
int64_t ring_push_n(ring_t *r, const uint64_t *tokens, size_t n, int policy, int64_t timeout_ns,
                    uint64_t *out_dropped, size_t *out_dropped_n);

/* Take up to max tokens, oldest first, waiting up to timeout_ns for the first.
 * Returns the number taken (>= 1), 0 if the timeout expired (or max is 0), or
 * -EPIPE if the ring is closed and empty. */
int64_t ring_pop_n(ring_t *r, uint64_t *out, size_t max, int64_t timeout_ns);

/* Batch-numbered tokens: a caller may give each batch a number and each of its
 * tokens an index, token = batch << RING_BATCH_SHIFT | index, so that a batch
 * crosses into C as (first, n) and comes back out as runs rather than as n
 * separate tokens. The ring itself attaches no meaning to tokens; only
 * ring_pop_runs uses the layout, to end a run where the batch number changes. */
#define RING_BATCH_SHIFT 24

/* ring_push_n for the tokens first, first + 1, ..., first + n - 1. Returns as
 * ring_push_n does, or -ENOMEM. out_dropped receives plain tokens. */
int64_t ring_push_seq(ring_t *r, uint64_t first, size_t n, int policy, int64_t timeout_ns,
                      uint64_t *out_dropped, size_t *out_dropped_n);

/* ring_pop_n that reports what it took as runs: out[2i] is the first token of
 * run i and out[2i + 1] its length, where a run is a stretch of consecutive
 * tokens (each one more than the last) with the same batch number. out needs
 * room for 2 * max uint64_t. Returns the number of runs (>= 1), 0 on timeout
 * (or max is 0), -EPIPE if closed and empty. */
int64_t ring_pop_runs(ring_t *r, uint64_t *out, size_t max, int64_t timeout_ns);

/* Single-token forms of push_n and pop_n for the one-item hot path: each cffi
 * argument costs time, and these need no buffer on the Python side.
 * ring_push_one: policy BLOCK, DROP_NEWEST or REJECT (DROP_OLDEST needs push_n
 * to hand the evicted token back, so it gets -EINVAL). Returns 1 if stored, 0
 * if not (the token is handed back), -EPIPE if closed.
 * ring_pop_one: returns the token, which must be < 2^63 so that it cannot be
 * mistaken for an error; -ETIMEDOUT if none came in time; -EPIPE if closed
 * and empty. */
int ring_push_one(ring_t *r, uint64_t token, int policy, int64_t timeout_ns);
int64_t ring_pop_one(ring_t *r, int64_t timeout_ns);

/* Wait until at least one slot is free. Returns the number of free slots
 * (>= 1), 0 on timeout, -EPIPE if closed. */
int64_t ring_wait_not_full(ring_t *r, int64_t timeout_ns);

/* Refuse further pushes and wake every waiter. Idempotent; returns 0. */
int ring_close(ring_t *r);

/* Lock-free snapshots. */
uint64_t ring_len(const ring_t *r);
int ring_is_closed(const ring_t *r);
uint64_t ring_capacity(const ring_t *r);

/* A consistent snapshot of the counters, taken under the lock. Returns 0. */
int ring_stats(ring_t *r, ring_stats_t *out);

#endif /* TASKORBIT_RINGBUF_H */
