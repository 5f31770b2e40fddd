/*
 * Unit tests: JPEG/PNG decoding against Pillow's convert('RGB').
 * Tolerance: none, decoded pixels must equal Pillow's byte for byte
 * (Pillow uses the same libjpeg-turbo with the same settings).
 */
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "image/tl_image.h"


static void
check_decode(const char *name, int want_w, int want_h, const char *ref_name)
{
	size_t		len,
				ref_len;
	uint8_t    *data = read_fixture(name, &len);
	uint8_t    *ref = read_fixture(ref_name, &ref_len);
	tl_image	img;
	tl_error	err;
	tl_code		rc;

	if (!ok(data && ref, "%s and %s readable", name, ref_name))
		goto out;
	rc = tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, &img, &err);
	if (!is_int(rc, TL_OK, "%s decodes", name))
	{
		diag("%s", err.message);
		goto out;
	}
	ok(img.width == want_w && img.height == want_h, "%s is %dx%d", name, want_w, want_h);
	if (ref_len == (size_t) img.width * img.height * 3)
	{
		size_t		diffs = 0,
					first = 0;

		for (size_t i = 0; i < ref_len; i++)
			if (img.rgb[i] != ref[i] && diffs++ == 0)
				first = i;
		if (!ok(diffs == 0, "%s pixels equal Pillow's", name))
			diag("%zu bytes differ, first at %zu: %d vs %d", diffs, first, img.rgb[first], ref[first]);
	}
	else
		ok(0, "%s reference size %zu", name, ref_len);
	tl_image_free(&img);
out:
	free(data);
	free(ref);
}

static void
check_real(const char *rel, int want_w, int want_h, uint64_t want_hash)
{
	size_t		len;
	uint8_t    *data = read_hymenoptera(rel, &len);
	tl_image	img;
	tl_error	err;

	if (data == NULL)
	{
		ok(1, "# SKIP hymenoptera %s not present", rel);
		return;
	}
	if (is_int(tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, &img, &err), TL_OK, "%s decodes", rel))
	{
		int			cw,
					ch;
		tl_code		crc = tl_image_check(data, len, TL_DEFAULT_MAX_PIXELS, &cw, &ch, &err);

		ok(img.width == want_w && img.height == want_h, "%s is %dx%d", rel, want_w, want_h);
		ok(crc == TL_OK && cw == want_w && ch == want_h, "%s: tl_image_check agrees (%dx%d)", rel, cw, ch);
		ok(fnv1a64(img.rgb, (size_t) img.width * img.height * 3) == want_hash,
		   "%s pixels hash like Pillow's", rel);
		tl_image_free(&img);
	}
	free(data);
}

/* Walk refs.txt: "decode NAME W H REF" and "real REL W H HASH ..." lines. */
static void
test_refs(void)
{
	size_t		len;
	char	   *text = (char *) read_fixture("refs.txt", &len);
	char	   *line,
			   *save = NULL;
	int			n = 0;

	if (!ok(text != NULL, "refs.txt readable"))
		return;
	text = realloc(text, len + 1);
	text[len] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char		name[256],
					ref[256];
		int			w,
					h;
		unsigned long long hash;

		if (sscanf(line, "decode %255s %d %d %255s", name, &w, &h, ref) == 4)
		{
			check_decode(name, w, h, ref);
			n++;
		}
		else if (sscanf(line, "real %255s %d %d %llx", name, &w, &h, &hash) == 4)
			check_real(name, w, h, (uint64_t) hash);
	}
	ok(n >= 20, "refs.txt lists %d decode references", n);
	free(text);
}

static void
test_limit(void)
{
	size_t		len;
	uint8_t    *data = read_fixture("synth_rgb420.jpg", &len);
	tl_image	img;
	tl_error	err;

	is_int(tl_image_decode(data, len, 40 * 30 - 1, &img, &err), TL_E_LIMIT, "JPEG over the pixel limit");
	ok(strstr(err.message, "40x30") != NULL, "limit message names the size: %s", err.message);
	ok(img.rgb == NULL, "nothing allocated on failure");
	is_int(tl_image_decode(data, len, 40 * 30, &img, &err), TL_OK, "JPEG at the pixel limit");
	tl_image_free(&img);
	free(data);
	data = read_fixture("synth_rgb.png", &len);
	is_int(tl_image_decode(data, len, 100, &img, &err), TL_E_LIMIT, "PNG over the pixel limit");
	free(data);
}

/* Bad inputs made from committed fixtures: each must fail cleanly with a clear message. */
static void
expect_failure(const uint8_t *data, size_t len, tl_code want, const char *want_text, const char *what)
{
	tl_image	img = {7, 7, (uint8_t *) &img};	/* decode must reset it */
	tl_error	err;

	tl_error_clear(&err);
	is_int(tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, &img, &err), want, "%s fails as %s",
		   what, tl_code_name(want));
	ok(img.rgb == NULL && img.width == 0 && strstr(err.message, want_text) != NULL,
	   "%s: \"%s\"", what, err.message);
}

static void
test_bad_inputs(void)
{
	size_t		len,
				plen;
	uint8_t    *jpg = read_fixture("synth_rgb420.jpg", &len);
	uint8_t    *png = read_fixture("synth_rgb.png", &plen);
	uint8_t    *gif;
	uint8_t		random_bytes[256];
	uint32_t	x = 12345;
	size_t		glen;
	int			clean = 1;

	if (!ok(jpg && png, "fixtures for bad inputs"))
		return;
	expect_failure((const uint8_t *) "", 0, TL_E_CORRUPT, "empty image data", "empty input");
	for (size_t i = 0; i < sizeof(random_bytes); i++)
		random_bytes[i] = (uint8_t) ((x = x * 1103515245 + 12345) >> 16);
	expect_failure(random_bytes, sizeof(random_bytes), TL_E_UNSUPPORTED, "unrecognised image data", "random bytes");
	gif = read_fixture("synth.gif", &glen);
	expect_failure(gif, glen, TL_E_UNSUPPORTED, "unsupported image format: GIF", "a GIF");
	free(gif);
	gif = read_hymenoptera("train/ants/imageNotFound.gif", &glen);
	if (gif)
		expect_failure(gif, glen, TL_E_UNSUPPORTED, "unsupported image format: GIF", "hymenoptera's GIF");
	free(gif);

	/* Truncated at every offset: a clear error each time, never a crash. */
	for (size_t n = 3; n < len; n++)	/* from the 3-byte magic on */
	{
		tl_image	img;
		tl_error	err;
		tl_code		rc = tl_image_decode(jpg, n, TL_DEFAULT_MAX_PIXELS, &img, &err);

		if (rc != TL_E_CORRUPT || img.rgb != NULL)
		{
			diag("JPEG cut at %zu: %s %s", n, tl_code_name(rc), err.message);
			clean = 0;
			tl_image_free(&img);
		}
	}
	ok(clean, "JPEG truncated at each of %zu offsets is corrupt", len - 3);
	/* tl_image_check (a training run's load) gives the decode's error at each of them */
	clean = 1;
	for (size_t n = 0; n < len; n++)
	{
		tl_image	img;
		tl_error	err,
					cerr;
		int			cw,
					ch;
		tl_code		rc = tl_image_decode(jpg, n, TL_DEFAULT_MAX_PIXELS, &img, &err);
		tl_code		crc = tl_image_check(jpg, n, TL_DEFAULT_MAX_PIXELS, &cw, &ch, &cerr);

		if (crc != rc || (rc != TL_OK && strcmp(err.message, cerr.message) != 0))
		{
			diag("JPEG cut at %zu: decode %s \"%s\", check %s \"%s\"", n, tl_code_name(rc),
				 err.message, tl_code_name(crc), cerr.message);
			clean = 0;
		}
		tl_image_free(&img);
	}
	ok(clean, "tl_image_check fails as the decode does at each of %zu truncations", len);
	{
		int			cw,
					ch;
		tl_error	err;

		ok(tl_image_check(jpg, len, TL_DEFAULT_MAX_PIXELS, &cw, &ch, &err) == TL_OK && cw == 40 && ch == 30,
		   "tl_image_check of the whole JPEG: ok, 40x30");
		is_int(tl_image_check(jpg, len, 40 * 30 - 1, &cw, &ch, &err), TL_E_LIMIT,
			   "tl_image_check: over the pixel limit like the decode");
	}
	expect_failure(jpg, len / 2, TL_E_CORRUPT, "truncated JPEG data", "JPEG cut in half");
	clean = 1;
	for (size_t n = 1; n < plen - 12; n++)	/* up to the IEND chunk */
	{
		tl_image	img;
		tl_error	err;
		tl_code		rc = tl_image_decode(png, n, TL_DEFAULT_MAX_PIXELS, &img, &err);

		if ((rc != TL_E_CORRUPT && rc != TL_E_UNSUPPORTED) || img.rgb != NULL)
		{
			diag("PNG cut at %zu: %s %s", n, tl_code_name(rc), err.message);
			clean = 0;
			tl_image_free(&img);
		}
	}
	ok(clean, "PNG truncated at each of %zu offsets fails cleanly", plen - 13);

	/* An over-limit header: 65500 x 65500 in the JPEG's SOF0 (never allocated). */
	for (size_t i = 2; i + 9 < len; i++)
		if (jpg[i] == 0xff && jpg[i + 1] == 0xc0)
		{
			jpg[i + 5] = 0xff;
			jpg[i + 6] = 0xdc;
			jpg[i + 7] = 0xff;
			jpg[i + 8] = 0xdc;
			break;
		}
	expect_failure(jpg, len, TL_E_LIMIT, "65500x65500 pixels exceeds the limit of 89478485", "65500x65500 JPEG header");
	free(jpg);
	free(png);
}

int
main(void)
{
	test_refs();
	test_limit();
	test_bad_inputs();
	return tap_done();
}
