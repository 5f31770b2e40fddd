/*
 * tl_memory.c - the network's large buffers (weights, their kernel
 * layouts, the planned arena, the gradients): 64-byte aligned, and on
 * transparent huge pages only when asked (tl_set_huge_pages,
 * transfer.huge_pages).
 *
 * Whether 2 MB pages pay depends on the machine.  A buffer advised
 * MADV_HUGEPAGE (Linux's default THP mode, "madvise", backs nothing else
 * with them) takes ~85 faults instead of 40,000 for a model's 170 MB.  But
 * a virtual machine whose guest reports free memory to its host
 * (virtio-balloon free page reporting) hands idle 2 MB blocks back, and
 * THP allocates exactly those: on the 2-core VM of docs/performance.md a
 * fresh huge page cost 2.2 ms per MB to fault in, 4 kB pages 0.4 ms/MB.
 * There a finetune run's first step took 380-430 ms with huge pages and
 * 130-140 ms without; later steps and predictions were the same within
 * noise.  So they are off by default.  Values are never affected.
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

static bool huge_pages = false;

void
tl_set_huge_pages(bool on)
{
	huge_pages = on;
}

bool
tl_get_huge_pages(void)
{
	return huge_pages;
}

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
	if (huge_pages && bytes >= TL_HUGE_MIN_BYTES)
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
