/*
 * tests/runtime/pool.c — the thread pool (normkit.h "Thread pool", CONVENTIONS C10).
 *
 * What nk_parallelize_1d must do: call fn once for every tile of the serial loop
 *     for (size_t i = 0; i < range; i += tile) fn(arg, i, min(tile, range - i));
 * and nothing else, whatever the pool size, and return only when every tile is done.
 * Also: the caller's thread takes part, workers really run tiles concurrently, workers that
 * went to sleep wake up, concurrent callers on one pool are serialized, a nested call runs
 * serially, and create/destroy handle their edge cases. Timings are printed, not checked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "normkit.h"
#include "test.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* NK_REQUIRE evaluates its condition twice: calls with side effects stay outside it. */
static nk_threadpool *make_pool(size_t nthreads) {
  nk_threadpool *pool = NULL;
  if (nk_threadpool_create(nthreads, &pool) != NK_OK) return NULL;
  return pool;
}

/* ---- every tile exactly once ------------------------------------------------------------------ */

typedef struct {
  size_t range, tile;      /* tile as the serial loop sees it (0 -> 1) */
  atomic_uint *visits;     /* per element */
  atomic_size_t calls;     /* fn invocations */
  atomic_int bad_tile;     /* a call whose (start, count) is not a tile of the serial loop */
} cover_arg;

static void cover_task(void *p, size_t start, size_t count) {
  cover_arg *a = p;
  atomic_fetch_add(&a->calls, 1);
  const size_t want = a->range - start < a->tile ? a->range - start : a->tile;
  if (start % a->tile != 0 || start >= a->range || count != want) {
    atomic_store(&a->bad_tile, 1);
    return;
  }
  for (size_t i = start; i < start + count; i++) atomic_fetch_add(&a->visits[i], 1);
}

/* Runs one (pool, range, tile) case; returns 1 if it passed. */
static int check_cover(nk_threadpool *pool, size_t range, size_t tile) {
  cover_arg a;
  a.range = range;
  a.tile = tile ? tile : 1;
  a.visits = calloc(range ? range : 1, sizeof *a.visits);
  NK_CHECK(a.visits != NULL, "calloc");
  if (a.visits == NULL) return 0;
  atomic_init(&a.calls, 0);
  atomic_init(&a.bad_tile, 0);
  nk_parallelize_1d(pool, cover_task, &a, range, tile);
  const size_t ntiles = range / a.tile + (range % a.tile != 0);
  size_t wrong = 0;
  for (size_t i = 0; i < range; i++) wrong += atomic_load(&a.visits[i]) != 1;
  const size_t calls = atomic_load(&a.calls);
  const int bad = atomic_load(&a.bad_tile);
  free(a.visits);
  NK_CHECK(wrong == 0 && calls == ntiles && !bad,
           "threads %zu range %zu tile %zu: %zu elements not visited once, %zu calls (want %zu)%s",
           nk_threadpool_size(pool), range, tile, wrong, calls, ntiles,
           bad ? ", a call was not a tile" : "");
  return wrong == 0 && calls == ntiles && !bad;
}

static const size_t cover_ranges[] = {0, 1, 2, 3, 5, 7, 8, 9, 31, 63, 64, 65, 100, 1000, 4097};
static const size_t cover_tiles[] = {0, 1, 2, 3, 4, 7, 16, 64, 1000, 5000};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void cover_all(nk_threadpool *pool) {
  for (size_t r = 0; r < NELEM(cover_ranges); r++)
    for (size_t t = 0; t < NELEM(cover_tiles); t++)
      if (!check_cover(pool, cover_ranges[r], cover_tiles[t])) return;
}

static void cover_with_threads(size_t nthreads) {
  nk_threadpool *pool = make_pool(nthreads);
  NK_REQUIRE(pool != NULL, "create(%zu)", nthreads);
  NK_CHECK(nk_threadpool_size(pool) == nthreads, "size %zu, want %zu",
           nk_threadpool_size(pool), nthreads);
  cover_all(pool);
  nk_threadpool_destroy(pool);
}

NK_TEST(every_tile_once_1_thread) { cover_with_threads(1); }
NK_TEST(every_tile_once_2_threads) { cover_with_threads(2); }
NK_TEST(every_tile_once_3_threads) { cover_with_threads(3); }
NK_TEST(every_tile_once_8_threads) { cover_with_threads(8); }

NK_TEST(every_tile_once_null_pool) { cover_all(NULL); }

/* ---- serial paths run in order on the caller ---------------------------------------------------- */

typedef struct {
  pthread_t caller;
  size_t next;       /* the start the next call must have (serial order) */
  int other_thread;  /* a call ran on another thread */
  int out_of_order;
} serial_arg;

static void serial_task(void *p, size_t start, size_t count) {
  serial_arg *a = p;
  if (!pthread_equal(pthread_self(), a->caller)) a->other_thread = 1;
  if (start != a->next) a->out_of_order = 1;
  a->next = start + count;
}

static void check_serial(nk_threadpool *pool, size_t range, size_t tile) {
  serial_arg a = {pthread_self(), 0, 0, 0};
  nk_parallelize_1d(pool, serial_task, &a, range, tile);
  NK_CHECK(!a.other_thread && !a.out_of_order && a.next == range,
           "serial run range %zu tile %zu: other thread %d, out of order %d, reached %zu",
           range, tile, a.other_thread, a.out_of_order, a.next);
}

NK_TEST(null_pool_runs_the_serial_loop_on_the_caller) {
  check_serial(NULL, 1000, 7);
  check_serial(NULL, 5, 0);
  check_serial(NULL, 3, 100);
}

NK_TEST(pool_of_one_runs_on_the_caller) {
  nk_threadpool *pool = make_pool(1);
  NK_REQUIRE(pool != NULL, "create(1)");
  check_serial(pool, 1000, 7);
  check_serial(pool, 64, 64);
  nk_threadpool_destroy(pool);
}

/* A range near SIZE_MAX with a huge tile: 2 tiles, the second ends at SIZE_MAX. Only the
 * start/count arithmetic is exercised (the task touches no memory). */
typedef struct {
  atomic_size_t calls;
  atomic_size_t sum_counts;
} huge_arg;

static void huge_task(void *p, size_t start, size_t count) {
  huge_arg *a = p;
  (void)start;
  atomic_fetch_add(&a->calls, 1);
  atomic_fetch_add(&a->sum_counts, count);
}

NK_TEST(huge_range_does_not_overflow) {
  const size_t range = SIZE_MAX, tile = SIZE_MAX / 2 + 1; /* tiles [0, 2^63), [2^63, 2^64-1) */
  for (int usepool = 0; usepool < 2; usepool++) {
    nk_threadpool *pool = NULL;
    if (usepool) {
      pool = make_pool(2);
      NK_REQUIRE(pool != NULL, "create(2)");
    }
    huge_arg a;
    atomic_init(&a.calls, 0);
    atomic_init(&a.sum_counts, 0);
    nk_parallelize_1d(pool, huge_task, &a, range, tile);
    NK_CHECK(atomic_load(&a.calls) == 2 && atomic_load(&a.sum_counts) == range,
             "pool %d: %zu calls, counts sum %zu", usepool, atomic_load(&a.calls),
             atomic_load(&a.sum_counts));
    nk_threadpool_destroy(pool);
  }
}

/* ---- the caller and the workers both run tiles, concurrently ---------------------------------- */

typedef struct {
  atomic_int started;
  atomic_int timed_out;
  pthread_t caller;
  atomic_int caller_ran;
  atomic_int worker_ran;
} meet_arg;

/* Each of the two tiles waits (up to 10 s) until the other has started: this can only finish
 * quickly if two threads run the tiles at the same time. */
static void meet_task(void *p, size_t start, size_t count) {
  meet_arg *a = p;
  (void)start;
  (void)count;
  if (pthread_equal(pthread_self(), a->caller)) {
    atomic_store(&a->caller_ran, 1);
  } else {
    atomic_store(&a->worker_ran, 1);
  }
  atomic_fetch_add(&a->started, 1);
  const double t0 = now_s();
  while (atomic_load(&a->started) < 2) {
    if (now_s() - t0 > 10.0) {
      atomic_store(&a->timed_out, 1);
      return;
    }
    sched_yield();
  }
}

NK_TEST(caller_and_worker_run_tiles_concurrently) {
  nk_threadpool *pool = make_pool(2);
  NK_REQUIRE(pool != NULL, "create(2)");
  for (int rep = 0; rep < 3; rep++) {
    meet_arg a;
    atomic_init(&a.started, 0);
    atomic_init(&a.timed_out, 0);
    atomic_init(&a.caller_ran, 0);
    atomic_init(&a.worker_ran, 0);
    a.caller = pthread_self();
    nk_parallelize_1d(pool, meet_task, &a, 2, 1);
    NK_CHECK(!atomic_load(&a.timed_out), "the two tiles never ran at the same time");
    NK_CHECK(atomic_load(&a.caller_ran) && atomic_load(&a.worker_ran),
             "caller ran %d, worker ran %d", atomic_load(&a.caller_ran),
             atomic_load(&a.worker_ran));
    if (rep == 1) sleep_ms(20); /* the worker has gone to sleep before the next region */
  }
  nk_threadpool_destroy(pool);
}

/* ---- many small regions, and regions after the workers went to sleep -------------------------- */

typedef struct {
  const uint32_t *x;
  atomic_uint_fast64_t sum;
} sum_arg;

static void sum_task(void *p, size_t start, size_t count) {
  sum_arg *a = p;
  uint64_t s = 0;
  for (size_t i = start; i < start + count; i++) s += a->x[i];
  atomic_fetch_add(&a->sum, s);
}

static void many_small_calls(size_t nthreads, int calls) {
  enum { N = 256 };
  uint32_t x[N];
  uint64_t want = 0;
  for (int i = 0; i < N; i++) {
    x[i] = (uint32_t)(i * 2654435761u);
    want += x[i];
  }
  nk_threadpool *pool = make_pool(nthreads);
  NK_REQUIRE(pool != NULL, "create(%zu)", nthreads);
  int bad = 0;
  const double t0 = now_s();
  for (int c = 0; c < calls; c++) {
    sum_arg a = {x, 0};
    nk_parallelize_1d(pool, sum_task, &a, N, 16);
    if (atomic_load(&a.sum) != want) bad++;
  }
  const double dt = now_s() - t0;
  NK_CHECK(bad == 0, "%d of %d calls gave a wrong sum", bad, calls);
  printf("        (%zu threads: %d calls of 16 tiles, %.2f us per call)\n", nthreads, calls,
         1e6 * dt / calls);
  nk_threadpool_destroy(pool);
}

NK_TEST(ten_thousand_small_calls_2_threads) { many_small_calls(2, 10000); }
NK_TEST(ten_thousand_small_calls_3_threads) { many_small_calls(3, 10000); }
NK_TEST(ten_thousand_small_calls_8_threads) { many_small_calls(8, 10000); }

NK_TEST(regions_after_workers_sleep) {
  nk_threadpool *pool = make_pool(3);
  NK_REQUIRE(pool != NULL, "create(3)");
  for (int rep = 0; rep < 5; rep++) {
    sleep_ms(rep * 2); /* 0 ms: workers still spin; 2-8 ms: they sleep on the condvar */
    if (!check_cover(pool, 1000, 10)) break;
  }
  nk_threadpool_destroy(pool);
}

/* ---- long tiles: the caller waits (and sleeps) for a slow worker ------------------------------- */

static void slow_task(void *p, size_t start, size_t count) {
  atomic_size_t *done = p;
  (void)count;
  if (start == 1) sleep_ms(5); /* far longer than the spin time */
  atomic_fetch_add(done, 1);
}

NK_TEST(caller_waits_for_a_slow_tile) {
  nk_threadpool *pool = make_pool(3);
  NK_REQUIRE(pool != NULL, "create(3)");
  for (int rep = 0; rep < 5; rep++) {
    atomic_size_t done;
    atomic_init(&done, 0);
    nk_parallelize_1d(pool, slow_task, &done, 3, 1);
    NK_CHECK(atomic_load(&done) == 3, "returned after %zu of 3 tiles", atomic_load(&done));
  }
  nk_threadpool_destroy(pool);
}

/* ---- concurrent callers on one pool are serialized --------------------------------------------- */

typedef struct {
  nk_threadpool *pool;
  int failures;
} caller_arg;

static void count_task(void *p, size_t start, size_t count) {
  (void)start;
  (void)count;
  atomic_fetch_add((atomic_size_t *)p, 1);
}

static void *caller_thread(void *p) {
  caller_arg *c = p;
  for (int i = 0; i < 2000; i++) {
    atomic_size_t calls;
    atomic_init(&calls, 0);
    nk_parallelize_1d(c->pool, count_task, &calls, 40, 3); /* 14 tiles */
    if (atomic_load(&calls) != 14) c->failures++;
  }
  return NULL;
}

NK_TEST(concurrent_callers_share_a_pool) {
  nk_threadpool *pool = make_pool(3);
  NK_REQUIRE(pool != NULL, "create(3)");
  enum { CALLERS = 3 };
  pthread_t th[CALLERS];
  caller_arg args[CALLERS];
  int started = 0;
  for (int i = 0; i < CALLERS; i++) {
    args[i].pool = pool;
    args[i].failures = 0;
    if (pthread_create(&th[i], NULL, caller_thread, &args[i]) != 0) break;
    started++;
  }
  NK_CHECK(started == CALLERS, "pthread_create");
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    NK_CHECK(args[i].failures == 0, "caller %d: %d regions missed tiles", i, args[i].failures);
  }
  nk_threadpool_destroy(pool);
}

/* ---- a task that calls nk_parallelize_1d on its own pool -------------------------------------- */

typedef struct {
  nk_threadpool *pool;
  atomic_size_t inner_elements;
} nest_arg;

static void inner_task(void *p, size_t start, size_t count) {
  nest_arg *a = p;
  (void)start;
  atomic_fetch_add(&a->inner_elements, count);
}

static void outer_task(void *p, size_t start, size_t count) {
  nest_arg *a = p;
  (void)start;
  (void)count;
  nk_parallelize_1d(a->pool, inner_task, a, 100, 7); /* runs serially: no deadlock */
}

NK_TEST(nested_call_on_the_same_pool_runs_serially) {
  nk_threadpool *pool = make_pool(3);
  NK_REQUIRE(pool != NULL, "create(3)");
  nest_arg a;
  a.pool = pool;
  atomic_init(&a.inner_elements, 0);
  nk_parallelize_1d(pool, outer_task, &a, 10, 1);
  NK_CHECK(atomic_load(&a.inner_elements) == 1000, "inner elements %zu, want 1000",
           atomic_load(&a.inner_elements));
  nk_threadpool_destroy(pool);
}

/* ---- create / destroy / size -------------------------------------------------------------------- */

NK_TEST(create_with_zero_threads_uses_every_online_cpu) {
  nk_threadpool *pool = make_pool(0);
  NK_REQUIRE(pool != NULL, "create(0)");
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  NK_CHECK(nk_threadpool_size(pool) == (size_t)(online > 0 ? online : 1), "size %zu, online %ld",
           nk_threadpool_size(pool), online);
  check_cover(pool, 1000, 3);
  nk_threadpool_destroy(pool);
}

NK_TEST(create_rejects_null_out) {
  NK_CHECK(nk_threadpool_create(2, NULL) == NK_STATUS_INVALID_ARGUMENT, "create(2, NULL)");
}

NK_TEST(create_huge_fails_cleanly) {
  /* nthreads - 1 worker handles do not fit in memory: OUT_OF_MEMORY, nothing leaked/started. */
  nk_threadpool *pool = (nk_threadpool *)&pool; /* must be reset to NULL */
  const nk_status st = nk_threadpool_create(SIZE_MAX, &pool);
  NK_CHECK(st == NK_STATUS_OUT_OF_MEMORY && pool == NULL, "create(SIZE_MAX): %s",
           nk_status_string(st));
}

NK_TEST(destroy_null_and_size_null) {
  nk_threadpool_destroy(NULL);
  NK_CHECK(nk_threadpool_size(NULL) == 1, "size(NULL) = %zu", nk_threadpool_size(NULL));
}

NK_TEST(create_destroy_repeatedly) {
  for (int i = 0; i < 200; i++) {
    nk_threadpool *pool = make_pool((size_t)(1 + i % 4));
    NK_REQUIRE(pool != NULL, "create");
    if (i % 2) check_cover(pool, 50, 4); /* half are destroyed without ever running a region */
    nk_threadpool_destroy(pool);
  }
}

NK_TEST(null_fn_and_zero_range_do_nothing) {
  nk_threadpool *pool = make_pool(2);
  NK_REQUIRE(pool != NULL, "create(2)");
  nk_parallelize_1d(pool, NULL, NULL, 100, 1);
  nk_parallelize_1d(NULL, NULL, NULL, 100, 1);
  serial_arg a = {pthread_self(), 0, 0, 0};
  nk_parallelize_1d(pool, serial_task, &a, 0, 1);
  nk_parallelize_1d(pool, serial_task, &a, 0, 0);
  NK_CHECK(a.next == 0, "a zero range called fn");
  nk_threadpool_destroy(pool);
}

int main(void) {
  NK_RUN(every_tile_once_null_pool);
  NK_RUN(every_tile_once_1_thread);
  NK_RUN(every_tile_once_2_threads);
  NK_RUN(every_tile_once_3_threads);
  NK_RUN(every_tile_once_8_threads);
  NK_RUN(null_pool_runs_the_serial_loop_on_the_caller);
  NK_RUN(pool_of_one_runs_on_the_caller);
  NK_RUN(huge_range_does_not_overflow);
  NK_RUN(caller_and_worker_run_tiles_concurrently);
  NK_RUN(ten_thousand_small_calls_2_threads);
  NK_RUN(ten_thousand_small_calls_3_threads);
  NK_RUN(ten_thousand_small_calls_8_threads);
  NK_RUN(regions_after_workers_sleep);
  NK_RUN(caller_waits_for_a_slow_tile);
  NK_RUN(concurrent_callers_share_a_pool);
  NK_RUN(nested_call_on_the_same_pool_runs_serially);
  NK_RUN(create_with_zero_threads_uses_every_online_cpu);
  NK_RUN(create_rejects_null_out);
  NK_RUN(create_huge_fails_cleanly);
  NK_RUN(destroy_null_and_size_null);
  NK_RUN(create_destroy_repeatedly);
  NK_RUN(null_fn_and_zero_range_do_nothing);
  return nk_test_summary();
}
