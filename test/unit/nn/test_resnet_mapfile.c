/*
 * Network files (tl_resnet_mapfile.c): a network written as a file and
 * opened from a private copy of it predicts bitwise as the original, under
 * both convolution algorithms; only the kernels' weights in use are
 * written; a mapped network may be written to (training) without touching
 * the file's bytes; release is called on free; and any header that does not
 * match the layout its configuration implies (or this build's layout
 * fingerprint), or a file shorter than it says, is refused with
 * TL_E_CORRUPT.
 */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "nn/tl_resnet.h"
#include "tl_rng.h"

typedef struct file_buf
{
	char	   *data;
	size_t		cap;
	size_t		written;		/* bytes passed to write, holes excluded */
} file_buf;

static tl_code
buf_write(void *ctx, const void *src, size_t bytes, uint64_t offset, tl_error *err)
{
	file_buf   *f = ctx;

	if (offset + bytes > f->cap)
	{
		size_t		cap = (size_t) (offset + bytes) * 2;
		char	   *grown = realloc(f->data, cap);

		if (grown == NULL)
			return tl_fail(err, TL_E_NOMEM, "out of memory");
		memset(grown + f->cap, 0, cap - f->cap);
		f->data = grown;
		f->cap = cap;
	}
	memcpy(f->data + offset, src, bytes);
	f->written += bytes;
	return TL_OK;
}

static int	releases;

static void
count_release(void *base, size_t bytes)
{
	releases++;
	free(base);
}

/* A page-aligned private copy of the file's first `bytes` bytes, as a mapping would give. */
static char *
mapped_copy(const file_buf *f, size_t bytes)
{
	void	   *p = NULL;

	if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0)
		return NULL;
	memset(p, 0, bytes);
	memcpy(p, f->data, bytes < f->cap ? bytes : f->cap);
	return p;
}

static void
check_algorithm(tl_conv_algorithm algo, const char *name)
{
	tl_resnet_config cfg = {3, 16};
	tl_error	err;
	tl_rng		rng;
	tl_resnet  *net = tl_resnet_new(&cfg, &err),
			   *mapped;
	file_buf	f = {NULL, 0, 0};
	uint64_t	file_bytes = 0;
	float		x[3 * 40 * 40],
				p1[3],
				p2[3];
	char	   *copy;
	int64_t		numel;
	float	   *w;

	tl_set_conv_algorithm(algo);
	tl_rng_seed(&rng, 7);
	tl_resnet_init_random(net, &rng);
	for (int i = 0; i < 3 * 40 * 40; i++)
		x[i] = (float) tl_rng_uniform(&rng) - 0.5f;
	tl_resnet_plan(net, 1, 40, 40, TL_MODE_FEATURE_EXTRACTOR, &err);
	is_int(tl_resnet_predict(net, x, 1, p1, &err), TL_OK, "%s: the original predicts", name);

	is_int(tl_resnet_mapfile_write(net, buf_write, &f, &file_bytes, &err), TL_OK, "%s: written", name);
	ok(file_bytes % 4096 == 0 && file_bytes >= f.written, "%s: a %llu-byte file, %zu bytes of it written",
	   name, (unsigned long long) file_bytes, f.written);

	copy = mapped_copy(&f, (size_t) file_bytes);
	releases = 0;
	mapped = tl_resnet_mapfile_open(copy, (size_t) file_bytes, count_release, &err);
	ok(mapped != NULL, "%s: opened", name);
	if (mapped == NULL)
		return;
	tl_resnet_plan(mapped, 1, 40, 40, TL_MODE_FEATURE_EXTRACTOR, &err);
	is_int(tl_resnet_predict(mapped, x, 1, p2, &err), TL_OK, "%s: the mapped network predicts", name);
	ok(memcmp(p1, p2, sizeof(p1)) == 0, "%s: bitwise the same probabilities (%.9g %.9g %.9g)",
	   name, p2[0], p2[1], p2[2]);

	/* writes go to the mapping (private in real use), never anywhere else */
	w = tl_resnet_param(mapped, "fc.bias", &numel);
	ok(w != NULL && w >= (float *) copy && w + numel <= (float *) (copy + file_bytes),
	   "%s: parameters live in the mapping", name);
	w[0] += 1.0f;
	is_int(tl_resnet_predict(mapped, x, 1, p2, &err), TL_OK, "%s: predicts after a write", name);
	ok(memcmp(p1, p2, sizeof(p1)) != 0, "%s: and the write counts", name);
	tl_resnet_free(mapped);
	is_int(releases, 1, "%s: free releases the mapping once", name);
	tl_resnet_free(net);
	free(f.data);
}

static void
check_refused(void)
{
	tl_resnet_config cfg = {2, 8};
	tl_error	err;
	tl_rng		rng;
	tl_resnet  *net = tl_resnet_new(&cfg, &err);
	file_buf	f = {NULL, 0, 0};
	uint64_t	file_bytes = 0;
	char	   *copy;
	struct
	{
		size_t		offset;
		const char *what;
	}			pokes[] = {
		{0, "magic"}, {8, "byte order"}, {16, "class count"}, {20, "base width"},
		{24, "algorithm"}, {32, "parameter count"}, {56, "parameter offset"}, {80, "file length"},
		{88, "layout fingerprint"},
	};

	tl_set_conv_algorithm(TL_CONV_WINOGRAD);
	tl_rng_seed(&rng, 8);
	tl_resnet_init_random(net, &rng);
	tl_resnet_mapfile_write(net, buf_write, &f, &file_bytes, &err);
	for (size_t i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++)
	{
		copy = mapped_copy(&f, (size_t) file_bytes);
		copy[pokes[i].offset] ^= 0x40;
		tl_error_clear(&err);
		ok(tl_resnet_mapfile_open(copy, (size_t) file_bytes, count_release, &err) == NULL &&
		   err.code == TL_E_CORRUPT, "a changed %s is refused: %s", pokes[i].what, err.message);
		free(copy);
	}
	copy = mapped_copy(&f, (size_t) file_bytes);
	ok(tl_resnet_mapfile_open(copy, (size_t) file_bytes - 4096, count_release, &err) == NULL &&
	   err.code == TL_E_CORRUPT, "a file shorter than its header says is refused: %s", err.message);
	ok(tl_resnet_mapfile_open(copy, 40, count_release, &err) == NULL && err.code == TL_E_CORRUPT,
	   "so is one shorter than a header: %s", err.message);
	free(copy);
	tl_resnet_free(net);
	free(f.data);
}

int
main(void)
{
	tl_set_num_threads(2);
	check_algorithm(TL_CONV_WINOGRAD, "winograd");
	check_algorithm(TL_CONV_IM2COL, "im2col");
	check_refused();
	tl_set_conv_algorithm(TL_CONV_WINOGRAD);
	tl_set_num_threads(1);
	return tap_done();
}
