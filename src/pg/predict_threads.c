/*
 * predict_threads.c - how many compute threads a prediction call uses:
 * transfer.predict_threads, and its automatic choice (0, the default).
 *
 * A default session predicting over a table of images usually gets no
 * parallel plan: images are TOASTed, so even a large table has few heap
 * pages and stays below min_parallel_table_scan_size.  Its one backend then
 * uses the core's thread pool (src/core/nn/tl_parallel.c) for the forward
 * pass.  Inside a parallel query every process (the workers and the leader)
 * already runs on its own core, so each keeps one thread and workers times
 * threads stays within the cores.
 *
 * The pool is created lazily by the first parallel kernel of the process
 * that runs it (and rebuilt after a fork), so a backend forked from the
 * postmaster never inherits threads; nothing here starts any.
 */
#include "postgres.h"

#include "access/parallel.h"
#include "fmgr.h"

#include "nn/tl_resnet.h"
#include "predict_threads.h"
#include "transfer_pg.h"

/* The automatic choice never takes more than this many threads. */
#define TL_PREDICT_AUTO_MAX_THREADS 4

/*
 * Threads for a prediction in this process now:
 *   transfer.predict_threads > 0: that many;
 *   transfer.blas_threads > 1 (the older, explicit setting): that many;
 *   a parallel worker, or the leader while it runs a parallel query: 1;
 *   otherwise the usable CPUs, at most TL_PREDICT_AUTO_MAX_THREADS.
 */
int
tl_predict_thread_count(void)
{
	if (tl_guc_predict_threads > 0)
		return tl_guc_predict_threads;
	if (tl_guc_blas_threads > 1)
		return tl_guc_blas_threads;
	if (IsParallelWorker() || ParallelContextActive())
		return 1;
	return Min(tl_usable_cpus(), TL_PREDICT_AUTO_MAX_THREADS);
}

/* Set the core's thread count for the prediction about to run. */
void
tl_predict_use_threads(void)
{
	int			n = tl_predict_thread_count();

	if (tl_get_num_threads() != n)
		tl_set_num_threads(n);
}

PG_FUNCTION_INFO_V1(tl_predict_threads);

/* tl_predict_threads() returns integer: tl_predict_thread_count() here and now */
Datum
tl_predict_threads(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(tl_predict_thread_count());
}
