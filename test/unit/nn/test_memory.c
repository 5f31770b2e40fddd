/*
 * Unit test: tl_alloc_large advises its buffers onto transparent huge pages
 * only when tl_set_huge_pages says so (transfer.huge_pages, default off).
 * The kernel's verdict is read back from /proc/self/smaps ("THPeligible" of
 * the buffer's mapping), which is only decided by our advice in Linux's
 * "madvise" THP mode; in the other modes those checks are skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "nn/tl_nn_internal.h"

/* THPeligible of the mapping holding p: 0 or 1, -1 if not found. */
static int
thp_eligible(const void *p)
{
	FILE	   *f = fopen("/proc/self/smaps", "r");
	char		line[512];
	int			in = 0,
				found = -1;
	uintptr_t	a = (uintptr_t) p;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f))
	{
		unsigned long lo,
					hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= lo && a < hi;
		else if (in && strncmp(line, "THPeligible:", 12) == 0)
		{
			found = atoi(line + 12);
			break;
		}
	}
	fclose(f);
	return found;
}

static int
thp_mode_madvise(void)
{
	FILE	   *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char		line[128] = "";

	if (f == NULL)
		return 0;
	if (fgets(line, sizeof line, f) == NULL)
		line[0] = '\0';
	fclose(f);
	return strstr(line, "[madvise]") != NULL;
}

int
main(void)
{
	size_t		bytes = (size_t) 8 << 20;
	float	   *off,
			   *on,
			   *small;

	ok(!tl_get_huge_pages(), "huge pages are off by default");
	off = tl_alloc_large(bytes);
	ok(off != NULL && ((uintptr_t) off & 63) == 0, "8 MB, huge pages off: allocated, 64-byte aligned");

	tl_set_huge_pages(true);
	ok(tl_get_huge_pages(), "huge pages on");
	on = tl_alloc_large(bytes);
	ok(on != NULL && ((uintptr_t) on & (((uintptr_t) 2 << 20) - 1)) == 0,
	   "8 MB, huge pages on: allocated, 2 MB aligned");
	small = tl_alloc_large(1000);
	ok(small != NULL && ((uintptr_t) small & 63) == 0, "1000 bytes, huge pages on: 64-byte aligned");
	tl_set_huge_pages(false);

	/* the buffers are usable whole */
	memset(off, 1, bytes);
	memset(on, 2, bytes);
	memset(small, 3, 1000);
	ok(((unsigned char *) off)[bytes - 1] == 1 && ((unsigned char *) on)[bytes - 1] == 2,
	   "both buffers written to their last byte");

	if (thp_mode_madvise())
	{
		is_int(thp_eligible(on), 1, "THP mode madvise: the buffer allocated with huge pages on is eligible");
		is_int(thp_eligible(off), 0, "THP mode madvise: the buffer allocated with huge pages off is not");
	}
	else
		diag("THP mode is not madvise here: the kernel's verdict is not ours, not checked");

	free(off);
	free(on);
	free(small);
	return tap_done();
}
