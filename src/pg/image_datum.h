/*
 * image_datum.h - image headers of bytea values, read without fetching the
 * whole value (image_datum.c).
 */
#ifndef TL_IMAGE_DATUM_H
#define TL_IMAGE_DATUM_H

#include "postgres.h"

#include "image/tl_image.h"

/*
 * tl_image_probe of a bytea Datum, possibly TOASTed.  *len gets the image's
 * length in bytes, also when the probe fails.  Nothing allocated survives
 * the call.
 */
extern tl_code tl_probe_image_datum(Datum value, size_t *len, tl_image_format *fmt,
									int *width, int *height, tl_error *err);

#endif
