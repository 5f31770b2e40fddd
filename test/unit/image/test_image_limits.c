/*
 * The hard cap on decoded images (tl_image_limits.c): no max_pixels argument,
 * however large (or 0, "no limit"), lets a decoder allocate more than
 * TL_MAX_DECODED_BYTES (1 GiB) of RGB8.  Tiny PNG and JPEG files whose
 * headers declare huge sizes are refused with TL_E_LIMIT from the header,
 * before any allocation; the setting's own limit still applies below it.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tap.h"
#include "image/tl_image.h"

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* A PNG of w x h RGB8 pixels with a valid IHDR and a token IDAT. */
static size_t
make_png(uint32_t w, uint32_t h, uint8_t *out)
{
	static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	static const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x60, 0xa0, 0x0c, 0x00, 0x00, 0x00, 0x40, 0x00, 0x01};
	size_t		n = 0;

	memcpy(out, sig, 8);
	n = 8;
	/* IHDR */
	put_be32(out + n, 13);
	memcpy(out + n + 4, "IHDR", 4);
	put_be32(out + n + 8, w);
	put_be32(out + n + 12, h);
	out[n + 16] = 8;			/* depth */
	out[n + 17] = 2;			/* RGB */
	out[n + 18] = out[n + 19] = out[n + 20] = 0;
	put_be32(out + n + 21, (uint32_t) crc32(0, out + n + 4, 17));
	n += 25;
	/* IDAT */
	put_be32(out + n, sizeof(idat));
	memcpy(out + n + 4, "IDAT", 4);
	memcpy(out + n + 8, idat, sizeof(idat));
	put_be32(out + n + 8 + sizeof(idat), (uint32_t) crc32(0, out + n + 4, 4 + sizeof(idat)));
	n += 12 + sizeof(idat);
	/* IEND */
	put_be32(out + n, 0);
	memcpy(out + n + 4, "IEND", 4);
	put_be32(out + n + 8, (uint32_t) crc32(0, out + n + 4, 4));
	return n + 12;
}

/* A small real JPEG with its SOF0 size patched to w x h (each <= 65535). */
static uint8_t *
make_jpeg(int w, int h, size_t *len)
{
	uint8_t		px[16 * 16 * 3];
	tl_image	img = {0};
	uint8_t    *out = NULL;
	tl_error	err;

	memset(px, 128, sizeof(px));
	img.width = img.height = 16;
	img.rgb = px;
	if (tl_image_encode_jpeg(&img, 90, &out, len, &err) != TL_OK)
		return NULL;
	for (size_t i = 2; i + 9 < *len; i++)
		if (out[i] == 0xff && out[i + 1] == 0xc0)
		{
			out[i + 5] = h >> 8;
			out[i + 6] = h & 0xff;
			out[i + 7] = w >> 8;
			out[i + 8] = w & 0xff;
			return out;
		}
	free(out);
	return NULL;
}

static void
expect_limit(const char *what, const uint8_t *data, size_t len, int64_t max_pixels)
{
	tl_image	img;
	tl_error	err;
	tl_code		rc = tl_image_decode(data, len, max_pixels, &img, &err);

	if (!is_int(rc, TL_E_LIMIT, "%s with max_pixels %lld is refused as too large",
				what, (long long) max_pixels))
		printf("# %s\n", err.message);
	else
		ok(img.rgb == NULL && strstr(err.message, "pixels") != NULL,
		   "%s: no image, and the message says why: %s", what, err.message);
}

int
main(void)
{
	uint8_t		png[128];
	size_t		n;
	uint8_t    *jpeg;
	size_t		jlen = 0;
	const int64_t huge = INT64_MAX / 4;

	is_int(TL_HARD_MAX_PIXELS * 3, TL_MAX_DECODED_BYTES - 1,
		   "the hard cap is 1 GiB of RGB8 (%lld pixels)", (long long) TL_HARD_MAX_PIXELS);

	n = make_png(65535, 65535, png);
	expect_limit("PNG declaring 65535x65535", png, n, huge);
	expect_limit("PNG declaring 65535x65535", png, n, 0);
	/* 4e8 pixels: under 2^31 (the old bound), over 1 GiB decoded */
	n = make_png(20000, 20000, png);
	expect_limit("PNG declaring 20000x20000", png, n, huge);
	expect_limit("PNG declaring 20000x20000", png, n, 0);
	/* just over the cap: 18919 x 18919 = 357928561 pixels */
	n = make_png(18919, 18919, png);
	expect_limit("PNG declaring 18919x18919", png, n, huge);
	/* a long thin image within the pixel cap but over the side cap */
	n = make_png(300000, 1, png);
	expect_limit("PNG declaring 300000x1", png, n, huge);
	/* below the cap the setting still decides */
	n = make_png(10000, 10000, png);
	expect_limit("PNG declaring 10000x10000", png, n, TL_DEFAULT_MAX_PIXELS);

	jpeg = make_jpeg(65535, 65535, &jlen);
	if (ok(jpeg != NULL, "a 16x16 JPEG encoded and its SOF0 patched to 65535x65535"))
		expect_limit("JPEG declaring 65535x65535", jpeg, jlen, huge);
	free(jpeg);
	jpeg = make_jpeg(20000, 20000, &jlen);
	if (ok(jpeg != NULL, "a JPEG patched to 20000x20000"))
		expect_limit("JPEG declaring 20000x20000", jpeg, jlen, 0);
	free(jpeg);
	return tap_done();
}
