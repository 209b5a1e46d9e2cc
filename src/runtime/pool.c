/*
 * pool.c — the thread pool behind nk_parallelize_1d (CONVENTIONS C10). pthreads only.
 *
 * nk_parallelize_1d(pool, fn, arg, range, tile) replaces the serial loop
 *     for (size_t i = 0; i < range; i += tile) fn(arg, i, min(tile, range - i));
 *
 * How a parallel region runs
 *   The caller (holding pool->run_mutex, so regions on one pool never overlap: a second
 *   caller waits for the first region to finish) writes the job (fn, arg, range, tile,
 *   ntiles), resets the tile counters, sets `active` to the number of workers and publishes
 *   the job by incrementing `generation` (release). The tiles are cut into one contiguous
 *   share per thread (share p: tiles [p ntiles / T, (p+1) ntiles / T)), each with its own
 *   counter. Every thread — the caller is thread 0, worker i thread i + 1 — first takes the
 *   tiles of its own share with atomic_fetch_add on that share's counter, then helps with the
 *   other shares in order (p + 1, p + 2, ...). So repeated calls on the same shape keep each
 *   thread on the same rows, whose data stays in that core's L1/L2 (with one shared counter,
 *   rows moved between cores from call to call: measured on 64 x 1024 f32 LayerNorm, 2 threads,
 *   median 11.7 us with one counter), while a slow thread's share is still finished by the
 *   others. Each worker then decrements `active`. The caller returns when `active` is 0, i.e. when
 *   every worker has finished its last tile and will not touch the job again (acquire: the
 *   caller sees everything the tiles wrote).
 *
 * Waiting: spin first, then sleep
 *   A region of a few microseconds must not pay a futex wake per worker, so an idle worker
 *   spins on `generation` (with the pause instruction) for about NK_POOL_SPIN_NS and only
 *   then sleeps on `wake_cond`. The caller likewise spins on `active` before sleeping on
 *   `done_cond`. Lost wake-ups are excluded by a Dekker-style handshake on seq_cst atomics:
 *     sleeper: lock; sleepers++;  re-check generation;   wait       (worker)
 *     waker:   generation++;      if (sleepers) lock, broadcast     (caller)
 *   Either the sleeper sees the new generation or the waker sees the sleeper; the broadcast
 *   is made under the mutex, so it cannot fall between the re-check and the wait. The same
 *   pattern (caller_sleeping / active) wakes a caller that went to sleep.
 *   When the pool has more threads than the machine has online CPUs, spinning would only
 *   steal time from the threads that have work, so waits then yield instead of spinning.
 *
 * Other rules
 *   - A nested call on the same pool from inside one of its tasks runs serially on the
 *     calling thread (a thread-local marks the threads of a region), instead of deadlocking.
 *   - Regions of 0 or 1 tile, a NULL pool and a pool of size 1 run on the caller alone.
 *   - nk_parallelize_1d never allocates and never fails.
 *   - A pool belongs to the process that created it: after fork() the child has none of its
 *     workers, so the child must not use it (nor destroy it: that would wait for them).
 *   - Shared hot atomics each sit on their own 64-byte cache line (no false sharing).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define NK_POOL_CACHE_LINE 64
/* How long an idle worker (or a waiting caller) spins before it sleeps: long enough to bridge
 * the gap between back-to-back operator calls, short enough not to burn a core for long. */
#define NK_POOL_SPIN_NS 100000u
/* The clock is read once per this many pause iterations (a pause is 10-150 cycles). */
#define NK_POOL_SPIN_CHECK 64u

struct nk_threadpool {
  /* The job and its generation: written by the caller once per region, read by workers. */
  alignas(NK_POOL_CACHE_LINE) atomic_uint generation;
  atomic_int stop; /* set by destroy, published by a generation increment */
  nk_task_1d fn;
  void *arg;
  size_t range;
  size_t tile;
  size_t ntiles;

  /* The per-share tile counters (nthreads of them, one cache line each). */
  struct nk__pool_share *shares;

  /* Workers that have not yet finished the current region. */
  alignas(NK_POOL_CACHE_LINE) atomic_size_t active;

  /* Sleep/wake handshake state (touched only on the slow path). */
  alignas(NK_POOL_CACHE_LINE) atomic_size_t sleepers; /* workers inside the sleep section */
  atomic_int caller_sleeping;                         /* the caller waits on done_cond */
  pthread_mutex_t mutex;                              /* guards the two condition variables */
  pthread_cond_t wake_cond;                           /* workers: a new generation */
  pthread_cond_t done_cond;                           /* caller: active reached 0 */

  /* Cold state. */
  alignas(NK_POOL_CACHE_LINE) pthread_mutex_t run_mutex; /* one region at a time */
  size_t nthreads;                                       /* caller + workers */
  size_t nworkers;                                       /* threads started */
  int spin;                                              /* 0 when oversubscribed */
  unsigned initialized;                                  /* NK_POOL_INIT_* */
  pthread_t *workers;
  struct nk__pool_worker_arg *worker_args;
};

struct nk__pool_share {
  alignas(NK_POOL_CACHE_LINE) atomic_size_t next; /* tiles of this share taken so far */
};

struct nk__pool_worker_arg {
  nk_threadpool *pool;
  size_t index; /* thread index: workers are 1 .. nworkers (the caller is 0) */
};

/* The pool whose region this thread is currently running (worker threads: always their pool). */
static _Thread_local nk_threadpool *nk__pool_current;

static inline void nk__pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ volatile("yield");
#endif
}

static inline uint64_t nk__pool_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins (or yields, when oversubscribed) until *done(pool, token) or the spin time is over.
 * Returns 1 if the condition became true. */
typedef int (*nk__pool_cond)(nk_threadpool *pool, unsigned token);

static int nk__pool_spin(nk_threadpool *pool, nk__pool_cond done, unsigned token) {
  const int spin = pool->spin;
  uint64_t start = 0;
  for (unsigned i = 1;; i++) {
    if (done(pool, token)) return 1;
    if (spin) {
      nk__pool_pause();
    } else {
      sched_yield(); /* a system call: the clock read below costs little beside it */
    }
    if (!spin || i % NK_POOL_SPIN_CHECK == 0) {
      const uint64_t now = nk__pool_now_ns();
      if (start == 0) {
        start = now;
      } else if (now - start > NK_POOL_SPIN_NS) {
        return done(pool, token);
      }
    }
  }
}

static int nk__pool_new_generation(nk_threadpool *pool, unsigned seen) {
  return atomic_load_explicit(&pool->generation, memory_order_acquire) != seen;
}

static int nk__pool_all_done(nk_threadpool *pool, unsigned unused) {
  (void)unused;
  return atomic_load_explicit(&pool->active, memory_order_acquire) == 0;
}

/* The first tile of share p of T (p <= T): p * ntiles / T without overflow. */
static size_t nk__pool_share_begin(size_t ntiles, size_t p, size_t T) {
  return (ntiles / T) * p + (ntiles % T) * p / T;
}

/* Takes tiles of the current job until none is left: its own share first, then the others. */
static void nk__pool_run_tiles(nk_threadpool *pool, size_t self) {
  const nk_task_1d fn = pool->fn;
  void *const arg = pool->arg;
  const size_t range = pool->range, tile = pool->tile, ntiles = pool->ntiles;
  const size_t T = pool->nthreads;
  for (size_t k = 0; k < T; k++) {
    const size_t p = (self + k) % T;
    const size_t b = nk__pool_share_begin(ntiles, p, T), n = nk__pool_share_begin(ntiles, p + 1, T) - b;
    for (;;) {
      const size_t i = atomic_fetch_add_explicit(&pool->shares[p].next, 1, memory_order_relaxed);
      if (i >= n) break;
      const size_t start = (b + i) * tile; /* b + i < ntiles, so start < range */
      const size_t left = range - start;
      fn(arg, start, left < tile ? left : tile);
    }
  }
}

static void *nk__pool_worker(void *p) {
  const struct nk__pool_worker_arg *wa = p;
  nk_threadpool *pool = wa->pool;
  const size_t self = wa->index;
  nk__pool_current = pool;
  /* No region can have been published before the pool existed: generation started at 0. */
  unsigned seen = 0;
  for (;;) {
    /* Wait for the next generation: spin, then sleep. */
    if (!nk__pool_spin(pool, nk__pool_new_generation, seen)) {
      pthread_mutex_lock(&pool->mutex);
      atomic_fetch_add(&pool->sleepers, 1); /* seq_cst: see the handshake above */
      while (atomic_load(&pool->generation) == seen)
        pthread_cond_wait(&pool->wake_cond, &pool->mutex);
      atomic_fetch_sub(&pool->sleepers, 1);
      pthread_mutex_unlock(&pool->mutex);
    }
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) break;

    nk__pool_run_tiles(pool, self);

    /* Check out. After this the job may be replaced: do not read it again. */
    if (atomic_fetch_sub(&pool->active, 1) == 1 && atomic_load(&pool->caller_sleeping)) {
      pthread_mutex_lock(&pool->mutex);
      pthread_cond_signal(&pool->done_cond);
      pthread_mutex_unlock(&pool->mutex);
    }
  }
  return NULL;
}

/* Publishes a new generation (a job, or stop) and wakes sleeping workers. */
static void nk__pool_publish(nk_threadpool *pool) {
  atomic_fetch_add(&pool->generation, 1); /* seq_cst: release the job; handshake with sleepers */
  if (atomic_load(&pool->sleepers) != 0) {
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->wake_cond);
    pthread_mutex_unlock(&pool->mutex);
  }
}

/* The CPUs this process may run on (its affinity mask, which taskset and container CPU sets
 * narrow), else the online CPUs. */
static size_t nk__pool_online_cpus(void) {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return (size_t)n;
  }
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}

/* Bits of nk_threadpool.initialized: which pthread objects exist. */
#define NK_POOL_INIT_MUTEX 0x1u
#define NK_POOL_INIT_RUN_MUTEX 0x2u
#define NK_POOL_INIT_WAKE_COND 0x4u
#define NK_POOL_INIT_DONE_COND 0x8u

/* Stops and joins the started workers, then frees everything that was created. */
static void nk__pool_free(nk_threadpool *pool) {
  if (pool->nworkers > 0) {
    atomic_store_explicit(&pool->stop, 1, memory_order_relaxed);
    nk__pool_publish(pool);
    for (size_t i = 0; i < pool->nworkers; i++) pthread_join(pool->workers[i], NULL);
  }
  if (pool->initialized & NK_POOL_INIT_DONE_COND) pthread_cond_destroy(&pool->done_cond);
  if (pool->initialized & NK_POOL_INIT_WAKE_COND) pthread_cond_destroy(&pool->wake_cond);
  if (pool->initialized & NK_POOL_INIT_RUN_MUTEX) pthread_mutex_destroy(&pool->run_mutex);
  if (pool->initialized & NK_POOL_INIT_MUTEX) pthread_mutex_destroy(&pool->mutex);
  free(pool->workers);
  free(pool->worker_args);
  free(pool->shares);
  free(pool);
}

nk_status nk_threadpool_create(size_t nthreads, nk_threadpool **out) {
  if (out == NULL) return NK_STATUS_INVALID_ARGUMENT;
  *out = NULL;
  const size_t online = nk__pool_online_cpus();
  if (nthreads == 0) nthreads = online;

  nk_threadpool *pool = aligned_alloc(NK_POOL_CACHE_LINE, sizeof *pool);
  if (pool == NULL) return NK_STATUS_OUT_OF_MEMORY;
  memset(pool, 0, sizeof *pool);
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->stop, 0);
  atomic_init(&pool->active, 0);
  atomic_init(&pool->sleepers, 0);
  atomic_init(&pool->caller_sleeping, 0);
  pool->nthreads = nthreads;
  pool->spin = nthreads <= online;

  if (pthread_mutex_init(&pool->mutex, NULL) != 0) goto error;
  pool->initialized |= NK_POOL_INIT_MUTEX;
  if (pthread_mutex_init(&pool->run_mutex, NULL) != 0) goto error;
  pool->initialized |= NK_POOL_INIT_RUN_MUTEX;
  if (pthread_cond_init(&pool->wake_cond, NULL) != 0) goto error;
  pool->initialized |= NK_POOL_INIT_WAKE_COND;
  if (pthread_cond_init(&pool->done_cond, NULL) != 0) goto error;
  pool->initialized |= NK_POOL_INIT_DONE_COND;

  size_t share_bytes;
  if (!nk__mul_size(nthreads, sizeof *pool->shares, &share_bytes)) goto error;
  pool->shares = aligned_alloc(NK_POOL_CACHE_LINE, share_bytes);
  if (pool->shares == NULL) goto error;
  for (size_t i = 0; i < nthreads; i++) atomic_init(&pool->shares[i].next, 0);

  const size_t nworkers = nthreads - 1;
  if (nworkers > 0) {
    size_t bytes, arg_bytes;
    if (!nk__mul_size(nworkers, sizeof *pool->workers, &bytes) ||
        !nk__mul_size(nworkers, sizeof *pool->worker_args, &arg_bytes))
      goto error;
    pool->workers = malloc(bytes);
    pool->worker_args = malloc(arg_bytes);
    if (pool->workers == NULL || pool->worker_args == NULL) goto error;
    for (; pool->nworkers < nworkers; pool->nworkers++) {
      pool->worker_args[pool->nworkers] = (struct nk__pool_worker_arg){pool, pool->nworkers + 1};
      if (pthread_create(&pool->workers[pool->nworkers], NULL, nk__pool_worker,
                         &pool->worker_args[pool->nworkers]) != 0)
        goto error;
    }
  }
  *out = pool;
  return NK_STATUS_OK;

error:
  nk__pool_free(pool);
  return NK_STATUS_OUT_OF_MEMORY;
}

void nk_threadpool_destroy(nk_threadpool *pool) {
  if (pool == NULL) return;
  /* Wait for a region in flight on another thread (destroying during one is misuse anyway). */
  pthread_mutex_lock(&pool->run_mutex);
  pthread_mutex_unlock(&pool->run_mutex);
  nk__pool_free(pool);
}

size_t nk_threadpool_size(const nk_threadpool *pool) { return pool ? pool->nthreads : 1; }

static void nk__parallelize_serial(nk_task_1d fn, void *arg, size_t range, size_t tile) {
  for (size_t i = 0; i < range; i += tile) {
    const size_t left = range - i;
    fn(arg, i, left < tile ? left : tile);
    if (left <= tile) break; /* i + tile could overflow */
  }
}

void nk_parallelize_1d(nk_threadpool *pool, nk_task_1d fn, void *arg, size_t range, size_t tile) {
  if (range == 0 || fn == NULL) return;
  if (tile == 0) tile = 1;
  const size_t ntiles = range / tile + (range % tile != 0);
  if (pool == NULL || pool->nworkers == 0 || ntiles == 1 || nk__pool_current == pool) {
    nk__parallelize_serial(fn, arg, range, tile);
    return;
  }

  pthread_mutex_lock(&pool->run_mutex);
  pool->fn = fn;
  pool->arg = arg;
  pool->range = range;
  pool->tile = tile;
  pool->ntiles = ntiles;
  for (size_t i = 0; i < pool->nthreads; i++)
    atomic_store_explicit(&pool->shares[i].next, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->active, pool->nworkers, memory_order_relaxed);
  nk__pool_publish(pool);

  nk_threadpool *const outer = nk__pool_current;
  nk__pool_current = pool;
  nk__pool_run_tiles(pool, 0);
  nk__pool_current = outer;

  /* Wait until every worker has checked out: spin, then sleep. */
  if (!nk__pool_spin(pool, nk__pool_all_done, 0)) {
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->caller_sleeping, 1); /* seq_cst: see the handshake above */
    while (atomic_load(&pool->active) != 0) pthread_cond_wait(&pool->done_cond, &pool->mutex);
    atomic_store(&pool->caller_sleeping, 0);
    pthread_mutex_unlock(&pool->mutex);
  }
  pthread_mutex_unlock(&pool->run_mutex);
}
