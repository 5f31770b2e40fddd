/*
 * tl_png.c - PNG header probing and decoding through libpng.
 *
 * The result equals Pillow's Image.open(...).convert('RGB'):
 *   palette -> palette colours (transparency ignored);
 *   1/2/4-bit grayscale -> scaled to 8 bits, replicated to RGB;
 *   16-bit colour (and gray+alpha) -> the high byte of each sample;
 *   16-bit grayscale -> Pillow opens it as 32-bit mode "I", whose conversion
 *     to RGB clips to 0..255 (so most values become 255); reproduced;
 *   alpha -> dropped, not composited;
 *   gAMA/iCCP etc. -> ignored.
 * libpng reports errors through a callback that longjmps back here, never
 * through abort().
 */
#include "tl_image_internal.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

typedef struct tl_png_src
{
	const uint8_t *data;
	size_t		len;
	size_t		pos;
	char		message[256];
} tl_png_src;

static void
tl_png_read(png_structp png, png_bytep buf, size_t n)
{
	tl_png_src *src = png_get_io_ptr(png);

	if (n > src->len - src->pos)
		png_error(png, "truncated PNG data");
	memcpy(buf, src->data + src->pos, n);
	src->pos += n;
}

static void
tl_png_error_fn(png_structp png, png_const_charp msg)
{
	tl_png_src *src = png_get_error_ptr(png);

	snprintf(src->message, sizeof(src->message), "%s", msg ? msg : "unknown error");
	png_longjmp(png, 1);
}

static void
tl_png_warning_fn(png_structp png, png_const_charp msg)
{
	/* Benign problems (bad ancillary chunk CRCs, ...) are tolerated. */
}

/* Fixed-layout IHDR: signature, length 13, "IHDR", width, height, depth, type, ... */
tl_code
tl_png_probe(const uint8_t *data, size_t len, int *width, int *height,
			 tl_error *err)
{
	uint32_t	w,
				h;
	int			depth,
				type;

	if (len < 8 + 8 + 13 || memcmp(data + 8, "\0\0\0\x0dIHDR", 8) != 0)
		return tl_fail(err, TL_E_CORRUPT, "corrupt PNG header: no IHDR chunk");
	w = (uint32_t) data[16] << 24 | (uint32_t) data[17] << 16 | (uint32_t) data[18] << 8 | data[19];
	h = (uint32_t) data[20] << 24 | (uint32_t) data[21] << 16 | (uint32_t) data[22] << 8 | data[23];
	depth = data[24];
	type = data[25];
	if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff)
		return tl_fail(err, TL_E_CORRUPT, "PNG header has invalid dimensions %ux%u", w, h);
	if (!((type == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) ||
		  (type == 3 && (depth == 1 || depth == 2 || depth == 4 || depth == 8)) ||
		  ((type == 2 || type == 4 || type == 6) && (depth == 8 || depth == 16))))
		return tl_fail(err, TL_E_CORRUPT,
					   "corrupt PNG header: color type %d with bit depth %d", type, depth);
	*width = (int) w;
	*height = (int) h;
	return TL_OK;
}

/* Widen in place: a row of 16-bit big-endian gray to RGB8, clipped like Pillow's I -> RGB. */
static void
tl_png_gray16_row(uint8_t *row, int width)
{
	for (int x = width - 1; x >= 0; x--)
	{
		int			v = row[2 * x] << 8 | row[2 * x + 1];
		uint8_t		c = (uint8_t) (v > 255 ? 255 : v);

		row[3 * x] = c;
		row[3 * x + 1] = c;
		row[3 * x + 2] = c;
	}
}

tl_code
tl_png_decode(const uint8_t *data, size_t len, int64_t max_pixels,
			  tl_image *out, tl_error *err)
{
	tl_png_src	src = {data, len, 0, ""};
	png_structp png = NULL;
	png_infop	info = NULL;
	uint8_t    *volatile rgb = NULL;
	png_bytep  *volatile rows = NULL;
	tl_code		rc;
	png_uint_32 w,
				h;
	int			depth,
				type,
				interlace,
				gray16;
	int			width,
				height;

	png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, tl_png_error_fn, tl_png_warning_fn);
	if (png == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory decoding a PNG");
	info = png_create_info_struct(png);
	if (info == NULL)
	{
		png_destroy_read_struct(&png, NULL, NULL);
		return tl_fail(err, TL_E_NOMEM, "out of memory decoding a PNG");
	}
	if (setjmp(png_jmpbuf(png)))
	{
		rc = tl_fail(err, TL_E_CORRUPT, "corrupt PNG: %s", src.message);
		goto done;
	}
	png_set_read_fn(png, &src, tl_png_read);
	/* Bound libpng's own allocations for ancillary chunks (text, ICC, ...). */
	png_set_chunk_malloc_max(png, 16 * 1024 * 1024);
	png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
	png_read_info(png, info);
	png_get_IHDR(png, info, &w, &h, &depth, &type, &interlace, NULL, NULL);
	rc = tl_image_check_size("PNG image", w, h, max_pixels, err);
	if (rc != TL_OK)
		goto done;
	width = (int) w;
	height = (int) h;

	gray16 = (type == PNG_COLOR_TYPE_GRAY && depth == 16);
	if (type == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);
	if (type == PNG_COLOR_TYPE_GRAY && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	if (depth == 16 && !gray16)
		png_set_strip_16(png);
	if (type & PNG_COLOR_MASK_ALPHA || png_get_valid(png, info, PNG_INFO_tRNS))
		png_set_strip_alpha(png);
	if ((type == PNG_COLOR_TYPE_GRAY && !gray16) || type == PNG_COLOR_TYPE_GRAY_ALPHA)
		png_set_gray_to_rgb(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	if (png_get_rowbytes(png, info) != (size_t) width * (gray16 ? 2 : 3))
	{
		rc = tl_fail(err, TL_E_INTERNAL, "unexpected PNG row size %zu for width %d",
					 (size_t) png_get_rowbytes(png, info), width);
		goto done;
	}

	rgb = malloc((size_t) width * height * 3);
	rows = malloc(sizeof(png_bytep) * (size_t) height);
	if (rgb == NULL || rows == NULL)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory decoding a %dx%d PNG", width, height);
		goto done;
	}
	/* 16-bit gray rows (2 bytes/pixel) are read into the 3-byte row's slot. */
	for (int y = 0; y < height; y++)
		rows[y] = rgb + (size_t) y * width * 3;
	png_read_image(png, rows);
	if (gray16)
		for (int y = 0; y < height; y++)
			tl_png_gray16_row(rows[y], width);
	/* Like Pillow, ignore what follows the image data (no png_read_end). */

	out->width = width;
	out->height = height;
	out->rgb = rgb;
	rgb = NULL;
	rc = TL_OK;

done:
	png_destroy_read_struct(&png, &info, NULL);
	free(rgb);
	free(rows);
	return rc;
}
