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
tl_code		tl_jpeg_check(const uint8_t *data, size_t len, int64_t max_pixels,
						  int *width, int *height, tl_error *err);
tl_code		tl_png_probe(const uint8_t *data, size_t len, int *width, int *height,
						 tl_error *err);
tl_code		tl_png_decode(const uint8_t *data, size_t len, int64_t max_pixels,
						  tl_image *out, tl_error *err);

tl_code		tl_image_unsupported(const uint8_t *data, size_t len,
								 tl_image_format fmt, tl_error *err);
tl_code		tl_image_check_size(const char *what, int64_t width, int64_t height,
								int64_t max_pixels, tl_error *err);

/*
 * Pillow's Image.resize((out_w, out_h), BILINEAR) of an RGB8 image, computing
 * only the output window [win_x, win_x + win_w) x [win_y, win_y + win_h) into
 * dst (rows dst_stride bytes apart).  src may be a view into a larger image
 * (src_stride bytes per row), which is how a crop is resized without a copy.
 */
tl_code		tl_resample_bilinear(const uint8_t *src, int src_w, int src_h, size_t src_stride,
								 int out_w, int out_h, int win_x, int win_y, int win_w, int win_h,
								 uint8_t *dst, size_t dst_stride, tl_error *err);

#endif
