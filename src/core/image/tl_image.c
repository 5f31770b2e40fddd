/*
 * tl_image.c - format sniffing, header probing and the decode entry point.
 *
 * The format is decided from magic numbers only (never from a file name), so
 * a GIF called x.jpg is still reported as a GIF.  JPEG and PNG specifics live
 * in tl_jpeg.c and tl_png.c.
 */
#include "tl_image.h"
#include "tl_image_internal.h"

#include <stdlib.h>
#include <string.h>

const float tl_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float tl_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

tl_image_format
tl_image_sniff(const uint8_t *data, size_t len)
{
	static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

	if (data == NULL)
		return TL_FMT_UNKNOWN;
	if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
		return TL_FMT_JPEG;
	if (len >= 8 && memcmp(data, png_sig, 8) == 0)
		return TL_FMT_PNG;
	if (len >= 6 && (memcmp(data, "GIF87a", 6) == 0 || memcmp(data, "GIF89a", 6) == 0))
		return TL_FMT_GIF;
	if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
		return TL_FMT_WEBP;
	if (len >= 2 && data[0] == 'B' && data[1] == 'M')
		return TL_FMT_BMP;
	if (len >= 4 && (memcmp(data, "II*\0", 4) == 0 || memcmp(data, "MM\0*", 4) == 0))
		return TL_FMT_TIFF;
	return TL_FMT_UNKNOWN;
}

const char *
tl_image_format_name(tl_image_format fmt)
{
	switch (fmt)
	{
		case TL_FMT_JPEG:
			return "JPEG";
		case TL_FMT_PNG:
			return "PNG";
		case TL_FMT_GIF:
			return "GIF";
		case TL_FMT_WEBP:
			return "WebP";
		case TL_FMT_BMP:
			return "BMP";
		case TL_FMT_TIFF:
			return "TIFF";
		case TL_FMT_UNKNOWN:
			break;
	}
	return "unknown";
}

/*
 * The error for anything that is not JPEG or PNG: names the format found, or
 * shows the first bytes when nothing is recognised.
 */
tl_code
tl_image_unsupported(const uint8_t *data, size_t len, tl_image_format fmt,
					 tl_error *err)
{
	char		hex[3 * 8 + 1];
	size_t		n = len < 8 ? len : 8;

	if (data == NULL || len == 0)
		return tl_fail(err, TL_E_CORRUPT, "empty image data (0 bytes)");
	if (fmt != TL_FMT_UNKNOWN)
		return tl_fail(err, TL_E_UNSUPPORTED,
					   "unsupported image format: %s (only JPEG and PNG are supported)",
					   tl_image_format_name(fmt));
	hex[0] = '\0';
	for (size_t i = 0, pos = 0; i < n; i++)
		pos += snprintf(hex + pos, sizeof(hex) - pos, "%s%02x", i ? " " : "", data[i]);
	return tl_fail(err, TL_E_UNSUPPORTED,
				   "unrecognised image data of %zu byte%s starting with %s (only JPEG and PNG are supported)",
				   len, len == 1 ? "" : "s", hex);
}

tl_code
tl_image_probe(const uint8_t *data, size_t len, tl_image_format *fmt,
			   int *width, int *height, tl_error *err)
{
	tl_image_format f = tl_image_sniff(data, len);
	tl_code		rc;
	int			w = 0,
				h = 0;

	if (fmt)
		*fmt = f;
	if (width)
		*width = 0;
	if (height)
		*height = 0;
	switch (f)
	{
		case TL_FMT_JPEG:
			rc = tl_jpeg_probe(data, len, &w, &h, err);
			break;
		case TL_FMT_PNG:
			rc = tl_png_probe(data, len, &w, &h, err);
			break;
		default:
			return tl_image_unsupported(data, len, f, err);
	}
	if (rc != TL_OK)
		return rc;
	if (width)
		*width = w;
	if (height)
		*height = h;
	return TL_OK;
}

void
tl_image_free(tl_image *img)
{
	if (img == NULL)
		return;
	free(img->rgb);
	img->rgb = NULL;
	img->width = 0;
	img->height = 0;
}

tl_code
tl_image_decode(const uint8_t *data, size_t len, int64_t max_pixels,
				tl_image *out, tl_error *err)
{
	tl_image_format f = tl_image_sniff(data, len);

	out->width = 0;
	out->height = 0;
	out->rgb = NULL;
	switch (f)
	{
		case TL_FMT_JPEG:
			return tl_jpeg_decode(data, len, max_pixels, out, err);
		case TL_FMT_PNG:
			return tl_png_decode(data, len, max_pixels, out, err);
		default:
			return tl_image_unsupported(data, len, f, err);
	}
}

tl_code
tl_image_check(const uint8_t *data, size_t len, int64_t max_pixels,
			   int *width, int *height, tl_error *err)
{
	tl_image	img;
	tl_code		rc;

	*width = 0;
	*height = 0;
	if (tl_image_sniff(data, len) == TL_FMT_JPEG)
		return tl_jpeg_check(data, len, max_pixels, width, height, err);
	rc = tl_image_decode(data, len, max_pixels, &img, err);
	if (rc == TL_OK)
	{
		*width = img.width;
		*height = img.height;
	}
	tl_image_free(&img);
	return rc;
}
