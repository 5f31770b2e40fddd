/*
 * tl_resnet_mapfile.c - a network's eval-ready state as a file to map.
 *
 * Loading a model for prediction builds ~120 MB per process: the
 * parameters, and the kernels' weights made from them (Winograd-transformed
 * 3x3 weights, packed weights of the other convs).  On a virtual machine
 * fresh memory costs 2.5-5 ms per MB to fault in, so building that is most
 * of a process's first prediction.  A file of the built state, written once,
 * is mapped by later processes instead: its pages are the page cache's,
 * shared, and mapping them costs ~0.01 ms per MB.
 *
 * Layout (native floats in native byte order: the file never leaves the
 * machine that wrote it): a 4 kB header page, then the params, wpack and
 * wino regions, page-aligned, each as large as tl_resnet_new allocates it.
 * Of wpack and wino only the ranges the header's algorithm uses are
 * written; the rest are holes and are never read.  The header is written
 * last, so a file cut short never carries a valid one.  It carries a
 * fingerprint of this build's layouts (the parameters' keys and offsets, a
 * small conv's weights through each kernel transform): a file written by a
 * build whose layouts differ, say before the library was replaced without a
 * restart, is refused rather than misread.
 */
#include "tl_resnet_internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#define MAP_MAGIC "TLRNMAP1"
#define MAP_PAGE ((uint64_t) 4096)
#define MAP_ENDIAN 0x01020304u

/* 96 bytes, no padding: compared as a whole against the expected layout */
typedef struct map_header
{
	char		magic[8];
	uint32_t	endian;
	uint32_t	float_bytes;
	int32_t		num_classes;
	int32_t		base_width;
	int32_t		algo;			/* tl_conv_algorithm of the kernels' weights */
	int32_t		reserved;
	int64_t		nparams;		/* floats */
	int64_t		wpack_floats;	/* region sizes */
	int64_t		wino_floats;
	uint64_t	off_params;		/* bytes from the start of the file */
	uint64_t	off_wpack;
	uint64_t	off_wino;
	uint64_t	file_bytes;
	uint64_t	fingerprint;	/* of the layouts (fingerprint()) */
} map_header;

static uint64_t
fnv1a(uint64_t h, const void *data, size_t bytes)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < bytes; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* This build's layouts: every parameter's key and offset, and what each kernel transform makes of one conv. */
static uint64_t
fingerprint(const tl_resnet *net)
{
	enum
	{
		OC = 4, C = 3, K = 3
	};
	float		w[OC * C * K * K],
				wino[16 * OC * C],
				packed[OC * C * K * K],
				packed_t[OC * C * K * K];
	uint64_t	h = 0xcbf29ce484222325ull;

	for (int e = 0; e < net->nentries; e++)
	{
		h = fnv1a(h, net->entries[e].key, strlen(net->entries[e].key) + 1);
		h = fnv1a(h, &net->entries[e].offset, sizeof(net->entries[e].offset));
	}
	for (int i = 0; i < OC * C * K * K; i++)
		w[i] = (float) ((i * 37) % 101) / 101.0f - 0.5f;
	tl_winograd_weights(wino, w, OC, C);
	tl_conv_pack_weights(packed, w, OC, C, K);
	tl_conv_pack_weights_t(packed_t, w, OC, C, K);
	h = fnv1a(h, wino, sizeof(wino));
	h = fnv1a(h, packed, sizeof(packed));
	return fnv1a(h, packed_t, sizeof(packed_t));
}

static uint64_t
page_up(uint64_t n)
{
	return (n + MAP_PAGE - 1) & ~(MAP_PAGE - 1);
}

static void
layout(const tl_resnet *net, tl_conv_algorithm algo, map_header *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, MAP_MAGIC, sizeof(h->magic));
	h->endian = MAP_ENDIAN;
	h->float_bytes = sizeof(float);
	h->num_classes = net->cfg.num_classes;
	h->base_width = net->cfg.base_width;
	h->algo = (int32_t) algo;
	h->nparams = net->nparams_total;
	h->wpack_floats = tl_resnet_region_floats(net->wpack_total);
	h->wino_floats = tl_resnet_region_floats(net->wino_total);
	h->off_params = MAP_PAGE;
	h->off_wpack = page_up(h->off_params + (uint64_t) h->nparams * sizeof(float));
	h->off_wino = page_up(h->off_wpack + (uint64_t) h->wpack_floats * sizeof(float));
	h->file_bytes = page_up(h->off_wino + (uint64_t) h->wino_floats * sizeof(float));
	h->fingerprint = fingerprint(net);
}

/* The range of conv's kernel weights the algorithm uses: region offset (bytes) and floats. */
static void
conv_range(const tl_conv_layer *conv, tl_conv_algorithm algo, const map_header *h,
		   uint64_t *off, int64_t *start, int64_t *floats)
{
	if (algo == TL_CONV_WINOGRAD && conv->wino >= 0)
	{
		*off = h->off_wino;
		*start = conv->wino;
		*floats = (int64_t) 16 * conv->cout * conv->cin;
	}
	else if (conv->packed >= 0)
	{
		*off = h->off_wpack;
		*start = conv->packed;
		*floats = (int64_t) conv->cout * conv->cin * conv->k * conv->k;
	}
	else
		*floats = 0;			/* 1x1: read from params */
}

tl_code
tl_resnet_mapfile_write(tl_resnet *net, tl_mapfile_write_fn write, void *ctx,
						uint64_t *file_bytes, tl_error *err)
{
	static const char zeros[MAP_PAGE];
	char		page[MAP_PAGE];
	const tl_conv_layer *convs[1 + 3 * TL_RESNET_BLOCKS];
	map_header	h;
	tl_code		rc;
	int			n;

	tl_resnet_pack_eval(net);
	layout(net, net->packed_algo, &h);
	rc = write(ctx, net->params, (size_t) h.nparams * sizeof(float), h.off_params, err);
	n = tl_resnet_convs(net, convs);
	for (int i = 0; i < n && rc == TL_OK; i++)
	{
		uint64_t	off;
		int64_t		start,
					floats;
		const float *src;

		conv_range(convs[i], net->packed_algo, &h, &off, &start, &floats);
		if (floats == 0)
			continue;
		src = (off == h.off_wino ? net->wino : net->wpack) + start;
		rc = write(ctx, src, (size_t) floats * sizeof(float), off + (uint64_t) start * sizeof(float), err);
	}
	if (rc != TL_OK)
		return rc;
	memcpy(page, zeros, sizeof(page));
	memcpy(page, &h, sizeof(h));
	rc = write(ctx, page, sizeof(page), 0, err);
	if (rc == TL_OK)
		*file_bytes = h.file_bytes;
	return rc;
}

/* Fault in the ranges eval forwards read, in one call each: cheaper than page by page. */
static void
populate(tl_resnet *net, const map_header *h)
{
#if defined(__linux__) && defined(MADV_POPULATE_READ)
	const tl_conv_layer *convs[1 + 3 * TL_RESNET_BLOCKS];
	char	   *base = net->map_base;
	int			n = tl_resnet_convs(net, convs);

	(void) madvise(base, (size_t) (h->off_params + (uint64_t) h->nparams * sizeof(float)),
				   MADV_POPULATE_READ);
	for (int i = 0; i < n; i++)
	{
		uint64_t	off,
					first,
					last;
		int64_t		start,
					floats;

		conv_range(convs[i], (tl_conv_algorithm) h->algo, h, &off, &start, &floats);
		if (floats == 0)
			continue;
		first = (off + (uint64_t) start * sizeof(float)) & ~(MAP_PAGE - 1);
		last = off + (uint64_t) (start + floats) * sizeof(float);
		(void) madvise(base + first, (size_t) (last - first), MADV_POPULATE_READ);	/* advice only */
	}
#endif
}

tl_resnet *
tl_resnet_mapfile_open(void *base, size_t bytes, void (*release) (void *base, size_t bytes),
					   tl_error *err)
{
	map_header	h,
				want;
	tl_resnet_config cfg;
	tl_resnet  *net;

	if (bytes < sizeof(h))
	{
		tl_fail(err, TL_E_CORRUPT, "network file of %zu bytes has no header", bytes);
		return NULL;
	}
	memcpy(&h, base, sizeof(h));
	if (memcmp(h.magic, MAP_MAGIC, sizeof(h.magic)) != 0 || h.endian != MAP_ENDIAN ||
		h.float_bytes != sizeof(float) ||
		(h.algo != TL_CONV_WINOGRAD && h.algo != TL_CONV_IM2COL))
	{
		tl_fail(err, TL_E_CORRUPT, "not a network file of this build");
		return NULL;
	}
	cfg.num_classes = h.num_classes;
	cfg.base_width = h.base_width;
	net = tl_resnet_alloc(&cfg, err);
	if (net == NULL)
		return NULL;
	layout(net, (tl_conv_algorithm) h.algo, &want);
	if (memcmp(&h, &want, sizeof(h)) != 0 || h.file_bytes > bytes)
	{
		free(net);
		tl_fail(err, TL_E_CORRUPT, "network file of %zu bytes does not match its header", bytes);
		return NULL;
	}
	net->params = (float *) ((char *) base + h.off_params);
	net->wpack = (float *) ((char *) base + h.off_wpack);
	net->wino = (float *) ((char *) base + h.off_wino);
	net->map_base = base;
	net->map_bytes = bytes;
	net->map_release = release;
	/* the kernels' weights are those of the parameters, for eval forwards */
	net->params_version = 1;
	net->packed_version = 1;
	net->packed_algo = (tl_conv_algorithm) h.algo;
	net->packed_eval = true;
	populate(net, &h);
	return net;
}
