/*
 * tl_jpeg.c - JPEG header probing, decoding and checking through libjpeg-turbo.
 *
 * Pixels must equal Pillow's (which also decodes with libjpeg-turbo), so the
 * decompressor keeps libjpeg's defaults exactly as Pillow does: JDCT_ISLOW,
 * fancy upsampling, no DCT scaling (only a check, which keeps no pixels,
 * decodes at 1/8 scale).  CMYK and YCCK files are read as CMYK,
 * inverted (Pillow assumes Adobe's inverted CMYK) and converted to RGB with
 * Pillow's integer formula.
 *
 * libjpeg's default error handler calls exit(); ours longjmps back into the
 * function that called libjpeg, which then destroys the decompressor and
 * returns an error.  Running out of data is a warning for libjpeg (it invents
 * an EOI marker); Pillow refuses truncated files, and so do we.
 */
#include "tl_image_internal.h"

#include <limits.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* Progressive files can ask for any number of scans; real ones use ~10. */
#define TL_JPEG_MAX_SCANS 1000

typedef struct tl_jpeg_error_mgr
{
	struct jpeg_error_mgr pub;
	jmp_buf		jump;
	tl_code		code;			/* what the failure means for the caller */
	char		message[JMSG_LENGTH_MAX];
} tl_jpeg_error_mgr;

typedef struct tl_jpeg_ctx
{
	struct jpeg_decompress_struct cinfo;
	tl_jpeg_error_mgr jerr;
	struct jpeg_progress_mgr progress;
} tl_jpeg_ctx;

static void
tl_jpeg_error_exit(j_common_ptr cinfo)
{
	tl_jpeg_error_mgr *jerr = (tl_jpeg_error_mgr *) cinfo->err;

	(*cinfo->err->format_message) (cinfo, jerr->message);
	switch (cinfo->err->msg_code)
	{
		case JERR_IMAGE_TOO_BIG:
			jerr->code = TL_E_LIMIT;
			break;
		case JERR_OUT_OF_MEMORY:
			jerr->code = TL_E_NOMEM;
			break;
		default:
			jerr->code = TL_E_CORRUPT;
	}
	longjmp(jerr->jump, 1);
}

static void
tl_jpeg_emit_message(j_common_ptr cinfo, int msg_level)
{
	tl_jpeg_error_mgr *jerr = (tl_jpeg_error_mgr *) cinfo->err;

	if (msg_level >= 0)
		return;					/* trace messages */
	if (cinfo->err->msg_code == JWRN_JPEG_EOF)
	{
		snprintf(jerr->message, sizeof(jerr->message), "truncated JPEG data");
		jerr->code = TL_E_CORRUPT;
		longjmp(jerr->jump, 1);
	}
	/* Other warnings (corrupt entropy data etc.) are tolerated, as by Pillow. */
	cinfo->err->num_warnings++;
}

static void
tl_jpeg_output_message(j_common_ptr cinfo)
{
	/* never print to the server's stderr */
}

static void
tl_jpeg_progress(j_common_ptr cinfo)
{
	j_decompress_ptr dinfo = (j_decompress_ptr) cinfo;
	tl_jpeg_error_mgr *jerr = (tl_jpeg_error_mgr *) cinfo->err;

	if (!cinfo->is_decompressor)
		return;
	if (dinfo->input_scan_number > TL_JPEG_MAX_SCANS)
	{
		snprintf(jerr->message, sizeof(jerr->message),
				 "JPEG has more than %d scans", TL_JPEG_MAX_SCANS);
		jerr->code = TL_E_LIMIT;
		longjmp(jerr->jump, 1);
	}
}

/* The error for a longjmp out of libjpeg: "corrupt JPEG: <libjpeg's message>". */
static tl_code
tl_jpeg_fail(tl_error *err, const tl_jpeg_error_mgr *jerr, const char *what)
{
	switch (jerr->code)
	{
		case TL_E_LIMIT:
			return tl_fail(err, TL_E_LIMIT, "%s over a decoder limit: %s", what, jerr->message);
		case TL_E_NOMEM:
			return tl_fail(err, TL_E_NOMEM, "out of memory decoding %s: %s", what, jerr->message);
		default:
			return tl_fail(err, TL_E_CORRUPT, "corrupt %s: %s", what, jerr->message);
	}
}

/* Set up the decompressor; the caller must setjmp(ctx->jerr.jump) before use. */
static void
tl_jpeg_init(tl_jpeg_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->cinfo.err = jpeg_std_error(&ctx->jerr.pub);
	ctx->jerr.pub.error_exit = tl_jpeg_error_exit;
	ctx->jerr.pub.emit_message = tl_jpeg_emit_message;
	ctx->jerr.pub.output_message = tl_jpeg_output_message;
	ctx->progress.progress_monitor = tl_jpeg_progress;
}

tl_code
tl_jpeg_probe(const uint8_t *data, size_t len, int *width, int *height,
			  tl_error *err)
{
	tl_jpeg_ctx *ctx = malloc(sizeof(tl_jpeg_ctx));
	volatile tl_code rc = TL_OK;

	if (ctx == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory reading a JPEG header");
	if (len > ULONG_MAX)
	{
		free(ctx);
		return tl_fail(err, TL_E_LIMIT, "JPEG data too large");
	}
	tl_jpeg_init(ctx);
	if (setjmp(ctx->jerr.jump))
	{
		rc = tl_jpeg_fail(err, &ctx->jerr, "JPEG header");
		jpeg_destroy_decompress(&ctx->cinfo);
		free(ctx);
		return rc;
	}
	jpeg_create_decompress(&ctx->cinfo);
	ctx->cinfo.progress = &ctx->progress;
	jpeg_mem_src(&ctx->cinfo, data, (unsigned long) len);
	jpeg_read_header(&ctx->cinfo, TRUE);
	if (ctx->cinfo.image_width == 0 || ctx->cinfo.image_height == 0)
		rc = tl_fail(err, TL_E_CORRUPT, "JPEG header has invalid dimensions %ux%u",
					 ctx->cinfo.image_width, ctx->cinfo.image_height);
	else
	{
		*width = (int) ctx->cinfo.image_width;
		*height = (int) ctx->cinfo.image_height;
	}
	jpeg_destroy_decompress(&ctx->cinfo);
	free(ctx);
	return rc;
}

/*
 * Pillow: CMYK JPEG data is taken as Adobe-inverted ("CMYK;I"), then
 * convert('RGB') computes nk = 255 - K, R = nk - nk * C / 255 (rounded with
 * MULDIV255).  With raw inverted samples c, k: K = 255 - k, so nk = k.
 */
static inline uint8_t
tl_cmyk_channel(int inverted_c, int nk)
{
	int			c = 255 - inverted_c;
	int			tmp = c * nk + 128;
	int			v = nk - (((tmp >> 8) + tmp) >> 8);

	return (uint8_t) (v < 0 ? 0 : v > 255 ? 255 : v);
}

/*
 * Decode to RGB8, or with check set only verify that it would: then libjpeg
 * decodes at 1/8 scale, which still entropy-decodes every coefficient of
 * every scan to the EOI marker (where corrupt and truncated data are found)
 * but inverse-transforms only the DC coefficients and converts 1/64 of the
 * pixels: ~25% less time on hymenoptera's JPEGs.  out gets the full-size
 * dimensions and no pixels.
 */
static tl_code
jpeg_decode_or_check(const uint8_t *data, size_t len, int64_t max_pixels, bool check,
					 tl_image *out, tl_error *err)
{
	tl_jpeg_ctx *ctx = malloc(sizeof(tl_jpeg_ctx));
	uint8_t    *volatile rgb = NULL;
	uint8_t    *volatile cmyk_row = NULL;
	tl_code		rc;
	int			width,
				height,
				out_w,
				out_h,
				cmyk;

	if (ctx == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory decoding a JPEG");
	if (len > ULONG_MAX)
	{
		free(ctx);
		return tl_fail(err, TL_E_LIMIT, "JPEG data too large");
	}
	tl_jpeg_init(ctx);
	if (setjmp(ctx->jerr.jump))
	{
		rc = tl_jpeg_fail(err, &ctx->jerr, "JPEG");
		goto done;
	}
	jpeg_create_decompress(&ctx->cinfo);
	ctx->cinfo.progress = &ctx->progress;
	jpeg_mem_src(&ctx->cinfo, data, (unsigned long) len);
	jpeg_read_header(&ctx->cinfo, TRUE);

	width = out_w = (int) ctx->cinfo.image_width;
	height = out_h = (int) ctx->cinfo.image_height;
	rc = tl_image_check_size("JPEG image", width, height, max_pixels, err);
	if (rc != TL_OK)
		goto done;

	switch (ctx->cinfo.num_components)
	{
		case 1:
		case 3:
			/* libjpeg-turbo replicates grayscale into RGB exactly as convert('RGB'). */
			ctx->cinfo.out_color_space = JCS_RGB;
			cmyk = 0;
			break;
		case 4:
			/* libjpeg turns YCCK into CMYK; Pillow does the rest (below). */
			ctx->cinfo.out_color_space = JCS_CMYK;
			cmyk = 1;
			break;
		default:
			rc = tl_fail(err, TL_E_UNSUPPORTED,
						 "unsupported JPEG with %d color components (1, 3 or 4 are supported)",
						 ctx->cinfo.num_components);
			goto done;
	}
	if (ctx->cinfo.num_components == 3 &&
		ctx->cinfo.jpeg_color_space != JCS_YCbCr && ctx->cinfo.jpeg_color_space != JCS_RGB)
	{
		rc = tl_fail(err, TL_E_UNSUPPORTED, "unsupported JPEG color space %d",
					 (int) ctx->cinfo.jpeg_color_space);
		goto done;
	}

	if (check)
	{
		ctx->cinfo.scale_num = 1;
		ctx->cinfo.scale_denom = 8;
		jpeg_calc_output_dimensions(&ctx->cinfo);
		out_w = (int) ctx->cinfo.output_width;
		out_h = (int) ctx->cinfo.output_height;
	}
	rgb = malloc((size_t) out_w * out_h * 3);
	if (cmyk)
		cmyk_row = malloc((size_t) out_w * 4);
	if (rgb == NULL || (cmyk && cmyk_row == NULL))
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory decoding a %dx%d JPEG", width, height);
		goto done;
	}

	jpeg_start_decompress(&ctx->cinfo);
	if ((int) ctx->cinfo.output_width != out_w || (int) ctx->cinfo.output_height != out_h ||
		ctx->cinfo.output_components != (cmyk ? 4 : 3))
	{
		rc = tl_fail(err, TL_E_INTERNAL, "unexpected JPEG output geometry");
		goto done;
	}
	while (ctx->cinfo.output_scanline < ctx->cinfo.output_height)
	{
		int			y = (int) ctx->cinfo.output_scanline;
		JSAMPROW	row = cmyk ? cmyk_row : rgb + (size_t) y * out_w * 3;

		if (jpeg_read_scanlines(&ctx->cinfo, &row, 1) != 1)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "corrupt JPEG: no data for row %d", y);
			goto done;
		}
		if (cmyk)
		{
			uint8_t    *dst = rgb + (size_t) y * out_w * 3;

			for (int x = 0; x < out_w; x++)
			{
				const uint8_t *s = cmyk_row + 4 * x;
				int			nk = s[3];

				dst[3 * x] = tl_cmyk_channel(s[0], nk);
				dst[3 * x + 1] = tl_cmyk_channel(s[1], nk);
				dst[3 * x + 2] = tl_cmyk_channel(s[2], nk);
			}
		}
	}
	/* Like Pillow, read on to the EOI marker: a file cut before it is truncated. */
	jpeg_finish_decompress(&ctx->cinfo);
	out->width = width;
	out->height = height;
	if (!check)
	{
		out->rgb = rgb;
		rgb = NULL;
	}
	rc = TL_OK;

done:
	jpeg_destroy_decompress(&ctx->cinfo);
	free(ctx);
	free(rgb);
	free(cmyk_row);
	return rc;
}

tl_code
tl_jpeg_decode(const uint8_t *data, size_t len, int64_t max_pixels,
			   tl_image *out, tl_error *err)
{
	return jpeg_decode_or_check(data, len, max_pixels, false, out, err);
}

tl_code
tl_jpeg_check(const uint8_t *data, size_t len, int64_t max_pixels, int *width, int *height,
			  tl_error *err)
{
	tl_image	img = {0, 0, NULL};
	tl_code		rc = jpeg_decode_or_check(data, len, max_pixels, true, &img, err);

	*width = img.width;
	*height = img.height;
	return rc;
}
