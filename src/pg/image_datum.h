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

/* Whether an image of a user's table is one tl_train and tl_evaluate use. */
typedef enum tl_image_usability
{
	TL_IMAGE_USABLE,
	TL_IMAGE_TOO_BIG,			/* over transfer.max_image_file_size or max_image_pixels */
	TL_IMAGE_UNREADABLE			/* not a JPEG or PNG, by its header */
} tl_image_usability;

/*
 * The rule of both scans of a table: the size limit on the raw value first
 * (nothing detoasted), then the header, then the pixel limit.  *len, *width
 * and *height are set when usable.
 */
extern tl_image_usability tl_image_datum_usability(Datum value, size_t *len, int *width,
												   int *height);

#endif
