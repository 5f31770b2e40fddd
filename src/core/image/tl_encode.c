/*
 * tl_encode.c - RGB8 to JPEG (for previews) through libjpeg-turbo, and
 * the torchvision make_grid layout the preview shows images in.
 *
 * Errors longjmp out of libjpeg into this file (never exit()); the output
 * buffer is malloc'ed by libjpeg's memory destination and handed to the
 * caller, who frees it with free().
 */
#include "tl_image_internal.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct tl_jpeg_enc_error
{
	struct jpeg_error_mgr pub;
	jmp_buf		jump;
	char		message[JMSG_LENGTH_MAX];
} tl_jpeg_enc_error;

static void
enc_error_exit(j_common_ptr cinfo)
{
	tl_jpeg_enc_error *jerr = (tl_jpeg_enc_error *) cinfo->err;

	(*cinfo->err->format_message) (cinfo, jerr->message);
	longjmp(jerr->jump, 1);
}

static void
enc_output_message(j_common_ptr cinfo)
{
	/* never print to the server's stderr */
}

tl_code
tl_image_encode_jpeg(const tl_image *img, int quality, uint8_t **out, size_t *out_len,
					 tl_error *err)
{
	struct jpeg_compress_struct *cinfo;
	tl_jpeg_enc_error *jerr;
	unsigned char *volatile buf = NULL;
	unsigned long buf_len = 0;
	tl_code		rc;

	*out = NULL;
	*out_len = 0;
	if (img == NULL || img->rgb == NULL || img->width <= 0 || img->height <= 0 ||
		img->width > 65500 || img->height > 65500)
		return tl_fail(err, TL_E_INVALID, "cannot encode a %dx%d image as JPEG",
					   img ? img->width : 0, img ? img->height : 0);
	if (quality < 1 || quality > 100)
		return tl_fail(err, TL_E_INVALID, "JPEG quality %d is out of range (1 to 100)", quality);
	cinfo = calloc(1, sizeof(*cinfo));
	jerr = calloc(1, sizeof(*jerr));
	if (cinfo == NULL || jerr == NULL)
	{
		free(cinfo);
		free(jerr);
		return tl_fail(err, TL_E_NOMEM, "out of memory encoding a JPEG");
	}
	cinfo->err = jpeg_std_error(&jerr->pub);
	jerr->pub.error_exit = enc_error_exit;
	jerr->pub.output_message = enc_output_message;
	if (setjmp(jerr->jump))
	{
		rc = tl_fail(err, TL_E_INTERNAL, "encoding a JPEG failed: %s", jerr->message);
		jpeg_destroy_compress(cinfo);
		free(buf);
		free(cinfo);
		free(jerr);
		return rc;
	}
	jpeg_create_compress(cinfo);
	jpeg_mem_dest(cinfo, (unsigned char **) &buf, &buf_len);
	cinfo->image_width = (JDIMENSION) img->width;
	cinfo->image_height = (JDIMENSION) img->height;
	cinfo->input_components = 3;
	cinfo->in_color_space = JCS_RGB;
	jpeg_set_defaults(cinfo);
	jpeg_set_quality(cinfo, quality, TRUE);
	jpeg_start_compress(cinfo, TRUE);
	while (cinfo->next_scanline < cinfo->image_height)
	{
		JSAMPROW	row = (JSAMPROW) (img->rgb + (size_t) cinfo->next_scanline * img->width * 3);

		jpeg_write_scanlines(cinfo, &row, 1);
	}
	jpeg_finish_compress(cinfo);
	jpeg_destroy_compress(cinfo);
	free(cinfo);
	free(jerr);
	*out = buf;
	*out_len = buf_len;
	return TL_OK;
}

tl_code
tl_image_grid(const uint8_t *const *tiles, int n, int size, int nrow, int padding,
			  const uint8_t pad_rgb[3], tl_image *out, tl_error *err)
{
	int			xmaps,
				ymaps,
				cell,
				w,
				h;

	out->width = out->height = 0;
	out->rgb = NULL;
	if (n < 1 || size < 1 || nrow < 1 || padding < 0 || size > 16384 || padding > 1024 || n > 4096)
		return tl_fail(err, TL_E_INVALID, "invalid grid of %d images of %d pixels", n, size);
	/* torchvision.utils.make_grid: min(nrow, n) columns, padding around every cell */
	xmaps = n < nrow ? n : nrow;
	ymaps = (n + xmaps - 1) / xmaps;
	cell = size + padding;
	w = xmaps * cell + padding;
	h = ymaps * cell + padding;
	if ((int64_t) w * h > INT64_C(1) << 28)
		return tl_fail(err, TL_E_LIMIT, "grid of %dx%d pixels is too large", w, h);
	out->rgb = malloc((size_t) w * h * 3);
	if (out->rgb == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory making a %dx%d grid", w, h);
	out->width = w;
	out->height = h;
	for (size_t i = 0; i < (size_t) w * h; i++)
		memcpy(out->rgb + 3 * i, pad_rgb, 3);
	for (int k = 0; k < n; k++)
	{
		int			x0 = (k % xmaps) * cell + padding;
		int			y0 = (k / xmaps) * cell + padding;

		for (int y = 0; y < size; y++)
			memcpy(out->rgb + ((size_t) (y0 + y) * w + x0) * 3,
				   tiles[k] + (size_t) y * size * 3, (size_t) size * 3);
	}
	return TL_OK;
}
