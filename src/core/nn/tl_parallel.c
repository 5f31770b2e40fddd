/*
 * tl_parallel.c - the process's compute thread count and a small pool.
 *
 * Thread counts are explicit: nothing here reads OPENBLAS_NUM_THREADS or
 * starts threads at load time, so a forked PostgreSQL backend only gets the
 * threads its setting asks for.  All compute threads are this pool's:
 * OpenBLAS is kept single-threaded and called from the pool's threads.  The pool is created on first use and
 * remembers the pid that created it: a forked child (a PostgreSQL backend
 * forked from the postmaster) has no copies of the parent's threads, so it
 * abandons the inherited pool state and builds its own.
 *
 * Handoffs spin before they sleep.  A batch-1 forward pass is ~100
 * parallel loops of 10-200 us each; waking a sleeping thread through a
 * futex costs tens of microseconds on a virtual machine (perf over a
 * predicting backend: 8% of its time in the kernel's wake-up path).  So a
 * worker that finished a chunk, and a caller waiting for its workers, watch
 * the pool's counters for up to tl_spin_ns before they block on the
 * condition variables; a thread that blocks is woken as before.  The spin
 * is bounded (tl_set_spin_us) and short against the gaps between loops
 * that it covers.  On a host whose cores are oversubscribed a spinning
 * thread takes time from others, so 0 turns it off.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* sched_getaffinity, CPU_COUNT */
#endif
#include "tl_nn_internal.h"
#include "tl_resnet.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void) 0)
#endif

/* OpenBLAS's own API; declared here to avoid depending on cblas.h variants. */
extern void openblas_set_num_threads(int num_threads);
/* Only in its pthreads build (Debian's default); weak, so other builds load too. */
extern int	blas_thread_shutdown_(void) __attribute__((weak));

static int	tl_num_threads = 1;
static pid_t tl_blas_pinned_pid;

static int64_t tl_spin_ns = TL_DEFAULT_SPIN_US * 1000;

typedef struct tl_pool
{
	pthread_mutex_t lock;
	pthread_cond_t work;		/* workers wait for a new generation */
	pthread_cond_t done;		/* the caller waits for pending == 0 */
	pthread_t	threads[TL_MAX_THREADS];
	int			nworkers;		/* threads besides the caller */
	pid_t		owner;
	uint64_t	generation;
	bool		shutdown;
	/* the job of the current generation */
	tl_range_fn fn;
	void	   *ctx;
	int64_t		n;
	int			nchunks;
	int			pending;
} tl_pool;

typedef struct tl_worker_arg
{
	tl_pool    *pool;
	int			index;			/* worker i runs chunk i + 1 */
} tl_worker_arg;

static tl_pool *tl_the_pool;
static tl_worker_arg tl_worker_args[TL_MAX_THREADS];
static __thread bool tl_in_worker;

static inline int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Spin up to tl_spin_ns until the pool moves on: *generation != seen
 * (generation given: a worker waiting for work) or *pending reaches 0 (a
 * caller waiting for its workers).  True if it did.
 */
static bool
spin_until(const uint64_t *generation, uint64_t seen, const int *pending)
{
	int64_t		spin = __atomic_load_n(&tl_spin_ns, __ATOMIC_RELAXED);
	int64_t		deadline = 0;

	if (spin <= 0)
		return false;
	for (int i = 0;; i++)
	{
		if (generation ? __atomic_load_n(generation, __ATOMIC_ACQUIRE) != seen
			: __atomic_load_n(pending, __ATOMIC_ACQUIRE) <= 0)
			return true;
		if ((i & 63) == 0)
		{
			int64_t		t = now_ns();

			if (deadline == 0)
				deadline = t + spin;
			else if (t > deadline)
				return false;
		}
		cpu_relax();
	}
}

static inline void
chunk_range(int64_t n, int nchunks, int i, int64_t *begin, int64_t *end)
{
	*begin = n * i / nchunks;
	*end = n * (i + 1) / nchunks;
}

static void *
worker_main(void *p)
{
	tl_worker_arg *arg = p;
	tl_pool    *pool = arg->pool;
	uint64_t	seen = 0;

	tl_in_worker = true;
	pthread_mutex_lock(&pool->lock);
	for (;;)
	{
		if (!pool->shutdown && pool->generation == seen)
		{
			pthread_mutex_unlock(&pool->lock);
			(void) spin_until(&pool->generation, seen, NULL);
			pthread_mutex_lock(&pool->lock);
		}
		while (!pool->shutdown && pool->generation == seen)
			pthread_cond_wait(&pool->work, &pool->lock);
		if (pool->shutdown)
			break;
		seen = pool->generation;
		if (arg->index + 1 < pool->nchunks)
		{
			tl_range_fn fn = pool->fn;
			void	   *ctx = pool->ctx;
			int64_t		b,
						e;

			chunk_range(pool->n, pool->nchunks, arg->index + 1, &b, &e);
			pthread_mutex_unlock(&pool->lock);
			fn(ctx, b, e, arg->index + 1);
			pthread_mutex_lock(&pool->lock);
			if (__atomic_sub_fetch(&pool->pending, 1, __ATOMIC_RELEASE) == 0)
				pthread_cond_signal(&pool->done);
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void
pool_destroy(tl_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	pool->shutdown = true;
	pthread_cond_broadcast(&pool->work);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->nworkers; i++)
		pthread_join(pool->threads[i], NULL);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->work);
	pthread_cond_destroy(&pool->done);
	free(pool);
}

/* A pool with nthreads - 1 workers, or NULL (then work runs on the caller). */
static tl_pool *
pool_create(int nthreads)
{
	tl_pool    *pool = calloc(1, sizeof(*pool));

	if (!pool)
		return NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->work, NULL);
	pthread_cond_init(&pool->done, NULL);
	pool->owner = getpid();
	for (int i = 0; i < nthreads - 1; i++)
	{
		tl_worker_args[i].pool = pool;
		tl_worker_args[i].index = i;
		if (pthread_create(&pool->threads[i], NULL, worker_main, &tl_worker_args[i]) != 0)
			break;
		pool->nworkers++;
	}
	return pool;
}

static tl_pool *
pool_get(void)
{
	tl_pool    *pool = tl_the_pool;

	if (pool && pool->owner != getpid())
	{
		/*
		 * Inherited across fork: the threads do not exist here and the
		 * mutex may be in any state, so leave the memory alone and start
		 * over.
		 */
		pool = tl_the_pool = NULL;
	}
	if (pool && pool->nworkers != tl_num_threads - 1)
	{
		pool_destroy(pool);
		pool = tl_the_pool = NULL;
	}
	if (!pool && tl_num_threads > 1)
		pool = tl_the_pool = pool_create(tl_num_threads);
	return pool;
}

int
tl_parallel_for(int64_t n, int64_t grain, tl_range_fn fn, void *ctx)
{
	tl_pool    *pool;
	int			nchunks;
	int64_t		b,
				e;

	if (n <= 0)
		return 0;
	if (grain < 1)
		grain = 1;
	nchunks = tl_num_threads;
	if (n / grain < nchunks)
		nchunks = (int) (n / grain);
	if (nchunks <= 1 || tl_in_worker || (pool = pool_get()) == NULL)
	{
		fn(ctx, 0, n, 0);
		return 1;
	}
	if (nchunks > pool->nworkers + 1)
		nchunks = pool->nworkers + 1;

	pthread_mutex_lock(&pool->lock);
	pool->fn = fn;
	pool->ctx = ctx;
	pool->n = n;
	pool->nchunks = nchunks;
	pool->pending = nchunks - 1;
	__atomic_store_n(&pool->generation, pool->generation + 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&pool->work);
	pthread_mutex_unlock(&pool->lock);

	chunk_range(n, nchunks, 0, &b, &e);
	fn(ctx, b, e, 0);

	if (spin_until(NULL, 0, &pool->pending))
		return nchunks;
	pthread_mutex_lock(&pool->lock);
	while (pool->pending > 0)
		pthread_cond_wait(&pool->done, &pool->lock);
	pthread_mutex_unlock(&pool->lock);
	return nchunks;
}

/*
 * The engine splits its GEMMs over the pool itself, so OpenBLAS must run each
 * call on the calling thread: its own threads would compete with the pool's
 * (they spin in sched_yield between calls) and multiply the thread count.
 */
void
tl_blas_single_threaded(void)
{
	pid_t		pid = getpid();

	if (tl_blas_pinned_pid != pid)
	{
		openblas_set_num_threads(1);

		/*
		 * Its thread pool, started when the library loads, is never used at
		 * one thread, but its threads spin in sched_yield for ~0.1 s before
		 * they sleep: in a new backend that is the time of its first
		 * prediction, on the cores the prediction needs.  Stop them; OpenBLAS
		 * starts them again itself if it is ever given more threads.
		 */
		if (blas_thread_shutdown_)
			(void) blas_thread_shutdown_();
		tl_blas_pinned_pid = pid;
	}
}

void
tl_set_num_threads(int n)
{
	if (n < 1)
		n = 1;
	if (n > TL_MAX_THREADS)
		n = TL_MAX_THREADS;
	tl_num_threads = n;
	tl_blas_pinned_pid = 0;
	tl_blas_single_threaded();
}

void
tl_set_spin_us(int us)
{
	__atomic_store_n(&tl_spin_ns, (int64_t) (us < 0 ? 0 : us) * 1000, __ATOMIC_RELAXED);
}

int
tl_get_num_threads(void)
{
	return tl_num_threads;
}

/* CPUs this process may run on (its affinity mask: cpusets, taskset), at least 1. */
int
tl_usable_cpus(void)
{
	static pid_t counted_in = 0;
	static int	cpus = 1;

	if (counted_in != getpid())
	{
		cpu_set_t	set;
		long		online;

		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			cpus = CPU_COUNT(&set);
		else if ((online = sysconf(_SC_NPROCESSORS_ONLN)) > 0)
			cpus = (int) (online < 1024 ? online : 1024);
		else
			cpus = 1;
		if (cpus < 1)
			cpus = 1;
		counted_in = getpid();
	}
	return cpus;
}
