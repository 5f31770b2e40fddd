/* Unit tests: format sniffing and header probing (no pixel decoding). */
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "image/tl_image.h"

static void
probe_fixture(const char *name, tl_image_format want_fmt, int want_w, int want_h)
{
	size_t		len;
	uint8_t    *data = read_fixture(name, &len);
	tl_image_format fmt;
	int			w,
				h;
	tl_error	err;

	if (!ok(data != NULL, "fixture %s readable", name))
		return;
	is_int(tl_image_sniff(data, len), want_fmt, "%s sniffs as %s", name, tl_image_format_name(want_fmt));
	is_int(tl_image_probe(data, len, &fmt, &w, &h, &err), TL_OK, "%s probes", name);
	ok(fmt == want_fmt && w == want_w && h == want_h, "%s is %s %dx%d (got %dx%d)",
	   name, tl_image_format_name(want_fmt), want_w, want_h, w, h);
	free(data);
}

static void
probe_unsupported(const char *name, const char *want_in_message)
{
	size_t		len;
	uint8_t    *data = read_fixture(name, &len);
	tl_image_format fmt;
	int			w = -1,
				h = -1;
	tl_error	err;

	if (!ok(data != NULL, "fixture %s readable", name))
		return;
	is_int(tl_image_probe(data, len, &fmt, &w, &h, &err), TL_E_UNSUPPORTED, "%s is unsupported", name);
	ok(strstr(err.message, want_in_message) != NULL, "%s: message names the format: %s", name, err.message);
	ok(w == 0 && h == 0, "%s: no dimensions reported", name);
	free(data);
}

static void
test_bytes(void)
{
	static const uint8_t random_bytes[] = {0x4d, 0x5a, 0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00};
	static const uint8_t jpeg_garbage[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1};
	static const uint8_t png_short[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H'};
	uint8_t		png_zero[33];
	tl_error	err;
	int			w,
				h;
	tl_image_format fmt;

	is_int(tl_image_sniff(NULL, 0), TL_FMT_UNKNOWN, "NULL sniffs as unknown");
	is_int(tl_image_probe((const uint8_t *) "", 0, &fmt, &w, &h, &err), TL_E_CORRUPT, "empty input is corrupt");
	ok(strstr(err.message, "empty") != NULL, "empty input message: %s", err.message);
	is_int(tl_image_probe(random_bytes, sizeof random_bytes, &fmt, &w, &h, &err), TL_E_UNSUPPORTED,
		   "random bytes are unsupported");
	ok(strstr(err.message, "4d 5a 90 00") != NULL, "random bytes message shows them: %s", err.message);
	is_int(tl_image_probe(jpeg_garbage, sizeof jpeg_garbage, &fmt, &w, &h, &err), TL_E_CORRUPT,
		   "truncated JPEG header is corrupt");
	ok(fmt == TL_FMT_JPEG && strstr(err.message, "JPEG") != NULL, "truncated JPEG message: %s", err.message);
	is_int(tl_image_probe(png_short, sizeof png_short, &fmt, &w, &h, &err), TL_E_CORRUPT,
		   "truncated PNG header is corrupt");

	/* A PNG header announcing 0 x 5 */
	memcpy(png_zero, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\0\0\0\0\x05\x08\x02\0\0\0\0\0\0\0", 33);
	is_int(tl_image_probe(png_zero, sizeof png_zero, &fmt, &w, &h, &err), TL_E_CORRUPT,
		   "PNG with zero width is corrupt");
	ok(strstr(err.message, "0x5") != NULL, "zero width message: %s", err.message);
	/* 65535 x 65535 is fine for a probe (only decoding enforces the pixel limit) */
	memcpy(png_zero + 16, "\0\0\xff\xff\0\0\xff\xff", 8);
	is_int(tl_image_probe(png_zero, sizeof png_zero, &fmt, &w, &h, &err), TL_OK, "huge PNG header probes");
	ok(w == 65535 && h == 65535, "huge PNG dimensions reported");
	png_zero[25] = 7;
	is_int(tl_image_probe(png_zero, sizeof png_zero, &fmt, &w, &h, &err), TL_E_CORRUPT,
		   "PNG with an invalid color type is corrupt");
}

static void
test_hymenoptera_gif(void)
{
	const char *path = "train/ants/imageNotFound.gif";
	size_t		len;
	uint8_t    *data = read_hymenoptera(path, &len);
	tl_error	err;
	tl_image_format fmt;
	int			w,
				h;

	if (data == NULL)
	{
		ok(1, "# SKIP hymenoptera %s not present", path);
		return;
	}
	is_int(tl_image_probe(data, len, &fmt, &w, &h, &err), TL_E_UNSUPPORTED, "hymenoptera's GIF is unsupported");
	ok(strcmp(err.message, "unsupported image format: GIF (only JPEG and PNG are supported)") == 0,
	   "GIF message: %s", err.message);
	free(data);
}

int
main(void)
{
	probe_fixture("synth_rgb420.jpg", TL_FMT_JPEG, 40, 30);
	probe_fixture("synth_progressive.jpg", TL_FMT_JPEG, 40, 30);
	probe_fixture("synth_cmyk.jpg", TL_FMT_JPEG, 40, 30);
	probe_fixture("synth_gray.jpg", TL_FMT_JPEG, 40, 30);
	probe_fixture("synth_wide.jpg", TL_FMT_JPEG, 300, 4);
	probe_fixture("synth_1x1.jpg", TL_FMT_JPEG, 1, 1);
	probe_fixture("synth_rgb.png", TL_FMT_PNG, 40, 30);
	probe_fixture("synth_interlaced.png", TL_FMT_PNG, 41, 29);
	probe_fixture("synth_tall.png", TL_FMT_PNG, 5, 260);
	probe_unsupported("synth.gif", "GIF");
	probe_unsupported("synth.bmp", "BMP");
	probe_unsupported("synth.webp", "WebP");
	probe_unsupported("synth.tif", "TIFF");
	test_bytes();
	test_hymenoptera_gif();
	return tap_done();
}
