/* file_util.h - reading fixture files in the unit tests. */
#ifndef TL_TEST_FILE_UTIL_H
#define TL_TEST_FILE_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Whole file into a malloc'ed buffer (NULL if unreadable); *len set. */
static inline uint8_t *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	uint8_t    *buf = NULL;
	long		n;

	*len = 0;
	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
	{
		buf = malloc(n > 0 ? (size_t) n : 1);
		if (buf && fread(buf, 1, (size_t) n, f) != (size_t) n)
		{
			free(buf);
			buf = NULL;
		}
		else
			*len = (size_t) n;
	}
	fclose(f);
	return buf;
}

#endif
