/*
 * tl_parallel.c - the process's compute thread count.
 *
 * Thread counts are explicit: nothing here reads OPENBLAS_NUM_THREADS or
 * starts threads at load time, so a forked PostgreSQL backend only gets the
 * threads its setting asks for.
 */
#include "tl_resnet.h"

/* OpenBLAS's own API; declared here to avoid depending on cblas.h variants. */
extern void openblas_set_num_threads(int num_threads);

static int	tl_num_threads = 1;

void
tl_set_num_threads(int n)
{
	if (n < 1)
		n = 1;
	tl_num_threads = n;
	openblas_set_num_threads(n);
}

int
tl_get_num_threads(void)
{
	return tl_num_threads;
}
