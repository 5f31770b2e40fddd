/*
 * tl_memory.c - the network's large buffers (weights, their kernel
 * layouts, the planned arena) on transparent huge pages where the kernel
 * offers them.
 *
 * A freshly loaded model touches some 170 MB of new memory before its first
 * prediction ends (weights, Winograd-transformed weights, activations).  In
 * 4 kB pages that is over 40,000 page faults, most of a first call's time
 * on a virtual machine, where a fault is expensive.  Linux's default THP
 * mode ("madvise") only backs memory with 2 MB pages when asked, so buffers
 * of at least TL_HUGE_MIN_BYTES are allocated 2 MB-aligned and advised
 * MADV_HUGEPAGE: about 85 faults instead.  Where that is unavailable the
 * advice is ignored and nothing else changes.  Values are never affected.
 */
#include "tl_nn_internal.h"
#include "tl_resnet.h"

#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#define TL_HUGE_PAGE ((size_t) 2 << 20)
#define TL_HUGE_MIN_BYTES ((size_t) 4 << 20)

static void
zero_range(void *p, int64_t begin, int64_t end, int chunk)
{
	memset((char *) p + begin, 0, (size_t) (end - begin));
}

void
tl_zero_parallel(void *p, size_t bytes)
{
	tl_parallel_for((int64_t) bytes, (int64_t) 1 << 20, zero_range, p);	/* 1 MB per slice at least */
}

void *
tl_alloc_large(size_t bytes)
{
	void	   *p = NULL;

	if (bytes == 0)
		bytes = 64;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
	if (bytes >= TL_HUGE_MIN_BYTES)
	{
		size_t		rounded = (bytes + TL_HUGE_PAGE - 1) & ~(TL_HUGE_PAGE - 1);

		if (posix_memalign(&p, TL_HUGE_PAGE, rounded) != 0)
			return NULL;
		(void) madvise(p, rounded, MADV_HUGEPAGE);	/* advice only */
		return p;
	}
#endif
	if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t) 63) != 0)
		return NULL;
	return p;
}
