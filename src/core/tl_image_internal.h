/*
 * tl_image_internal.h - shared between the tl_image*.c files only.
 */
#ifndef TL_IMAGE_INTERNAL_H
#define TL_IMAGE_INTERNAL_H

#include <stdio.h>

#include "tl_image.h"

tl_code		tl_jpeg_probe(const uint8_t *data, size_t len, int *width, int *height,
						  tl_error *err);
tl_code		tl_jpeg_decode(const uint8_t *data, size_t len, int64_t max_pixels,
						   tl_image *out, tl_error *err);
tl_code		tl_png_probe(const uint8_t *data, size_t len, int *width, int *height,
						 tl_error *err);
tl_code		tl_png_decode(const uint8_t *data, size_t len, int64_t max_pixels,
						  tl_image *out, tl_error *err);

tl_code		tl_image_unsupported(const uint8_t *data, size_t len,
								 tl_image_format fmt, tl_error *err);
tl_code		tl_image_check_size(const char *what, int64_t width, int64_t height,
								int64_t max_pixels, tl_error *err);

#endif
