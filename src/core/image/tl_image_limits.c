/*
 * tl_image_limits.c - the size limits of a decoded image, which every
 * decoder checks from the file's header before it allocates anything.  The
 * bottom of the image folder: the decoders call it, it calls nothing here.
 */
#include "tl_image_internal.h"

/* The limit check every decoder makes from the header, before allocating. */
tl_code
tl_image_check_size(const char *what, int64_t width, int64_t height,
					int64_t max_pixels, tl_error *err)
{
	if (width <= 0 || height <= 0)
		return tl_fail(err, TL_E_CORRUPT, "%s has invalid dimensions %lldx%lld",
					   what, (long long) width, (long long) height);
	if (max_pixels > 0 && width * height > max_pixels)
		return tl_fail(err, TL_E_LIMIT,
					   "%s of %lldx%lld pixels exceeds the limit of %lld pixels",
					   what, (long long) width, (long long) height,
					   (long long) max_pixels);
	/*
	 * The hard cap, whatever max_pixels says: at most TL_MAX_DECODED_BYTES of
	 * RGB8, which also keeps every byte offset (w * h * 3) inside int.
	 */
	if (width > TL_MAX_IMAGE_SIDE || height > TL_MAX_IMAGE_SIDE ||
		width * height > TL_HARD_MAX_PIXELS)
		return tl_fail(err, TL_E_LIMIT,
					   "%s of %lldx%lld pixels exceeds the hard limit of %lld pixels "
					   "(%lld MiB decoded) that no setting can raise",
					   what, (long long) width, (long long) height,
					   (long long) TL_HARD_MAX_PIXELS,
					   (long long) (TL_MAX_DECODED_BYTES >> 20));
	return TL_OK;
}
