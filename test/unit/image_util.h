/* image_util.h - helpers shared by the image unit tests. */
#ifndef TL_TEST_IMAGE_UTIL_H
#define TL_TEST_IMAGE_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "file_util.h"

#define FIXTURES "test/fixtures/image/"


static inline uint8_t *
read_fixture(const char *name, size_t *len)
{
	char		path[512];

	snprintf(path, sizeof(path), FIXTURES "%s", name);
	return read_file(path, len);
}

static inline uint64_t
fnv1a64(const uint8_t *p, size_t n)
{
	uint64_t	h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return h;
}

/*
 * The hymenoptera dataset (read-only, never copied into the repo): $TL_HYMENOPTERA,
 * else beside the repository, else the shared machine path.  NULL if absent.
 */
static inline const char *
hymenoptera_dir(void)
{
	static const char *candidates[] = {"../shared/data/hymenoptera_data",
	"../../shared/data/hymenoptera_data", "/work/shared/data/hymenoptera_data"};
	const char *env = getenv("TL_HYMENOPTERA");
	char		probe[600];
	FILE	   *f;

	if (env && *env)
		return env;
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
	{
		snprintf(probe, sizeof(probe), "%s/train/ants/0013035.jpg", candidates[i]);
		if ((f = fopen(probe, "rb")) != NULL)
		{
			fclose(f);
			return candidates[i];
		}
	}
	return NULL;
}

/* Read a file of the dataset by relative path; NULL if the dataset or file is absent. */
static inline uint8_t *
read_hymenoptera(const char *rel, size_t *len)
{
	const char *dir = hymenoptera_dir();
	char		path[1024];

	*len = 0;
	if (dir == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	return read_file(path, len);
}

#endif
