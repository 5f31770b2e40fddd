/*
 * image_datum.c - image headers of bytea values without fetching them whole.
 *
 * tl_train's and tl_evaluate's scans only need each image's length, format
 * and dimensions.  Detoasting every image for that reads and copies all of
 * the data (the tutorial's 47 MB: about 0.2 s of a tl_train call, most of
 * it first touches of fresh memory) to look at its first few hundred bytes.
 * A prefix slice holds nearly every header; the rest of the value is
 * fetched only when it does not (a JPEG with a large EXIF block before its
 * frame header), so the result is always that of probing the whole image.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "fmgr.h"

#include "image_datum.h"
#include "transfer_pg.h"

/* JPEG frame headers follow the APPn segments; EXIF thumbnails are up to 64 KB. */
#define TL_PROBE_PREFIX (80 * 1024)

tl_code
tl_probe_image_datum(Datum value, size_t *len, tl_image_format *fmt,
					 int *width, int *height, tl_error *err)
{
	struct varlena *attr = (struct varlena *) DatumGetPointer(value);
	struct varlena *data;
	tl_code		rc;

	*len = toast_raw_datum_size(value) - VARHDRSZ;
	if (VARATT_IS_EXTENDED(attr) && *len > TL_PROBE_PREFIX)
	{
		data = detoast_attr_slice(attr, 0, TL_PROBE_PREFIX);
		rc = tl_image_probe((const uint8_t *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
							fmt, width, height, err);
		pfree(data);
		if (rc == TL_OK)
			return TL_OK;
	}
	data = pg_detoast_datum_packed(attr);
	rc = tl_image_probe((const uint8_t *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
						fmt, width, height, err);
	if (data != attr)
		pfree(data);
	return rc;
}

tl_image_usability
tl_image_datum_usability(Datum value, size_t *len, int *width, int *height)
{
	tl_image_format fmt;
	tl_error	err;

	if ((int64) (toast_raw_datum_size(value) - VARHDRSZ) >
		(int64) tl_guc_max_image_file_size * 1024)
		return TL_IMAGE_TOO_BIG;
	if (tl_probe_image_datum(value, len, &fmt, width, height, &err) != TL_OK)
		return TL_IMAGE_UNREADABLE;
	if ((int64) *width * *height > tl_guc_max_image_pixels)
		return TL_IMAGE_TOO_BIG;
	return TL_IMAGE_USABLE;
}
