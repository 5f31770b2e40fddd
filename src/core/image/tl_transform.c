/*
 * tl_transform.c - the tutorial's transforms as torchvision 0.14 on
 * PIL images computes them:
 *
 *   eval:  Resize(resize) of the shorter side -> CenterCrop(crop) -> ToTensor -> Normalize
 *   train: RandomResizedCrop(size) -> RandomHorizontalFlip(0.5) -> ToTensor -> Normalize
 *
 * Resizing is Pillow's bilinear (tl_resample.c).  The integer size and
 * offset arithmetic copies torchvision's, including Python's round-half-even.
 */
#include "tl_image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keep fp32 draws and normalisation free of FMA contraction (see tl_resample.c). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Largest side of a resized image and largest output we accept. */
#define TL_MAX_RESIZED_SIDE (1 << 28)
#define TL_MAX_OUTPUT_SIDE 16384

/* torchvision RandomResizedCrop defaults, as the tutorial uses them. */
#define RRC_SCALE_LO 0.08
#define RRC_SCALE_HI 1.0
#define RRC_RATIO_LO (3.0 / 4.0)
#define RRC_RATIO_HI (4.0 / 3.0)

int
tl_eval_resize_for(int size)
{
	return (int) (((int64_t) size * 256 + 112) / 224);
}

void
tl_normalize_rgb8(const uint8_t *rgb, size_t npix, float *out)
{
	float		lut[3][256];

	/* torchvision: img.float().div(255), then sub_(mean).div_(std), all fp32 */
	for (int c = 0; c < 3; c++)
		for (int v = 0; v < 256; v++)
		{
			float		x = (float) v / 255.0f;

			x = x - tl_imagenet_mean[c];
			lut[c][v] = x / tl_imagenet_std[c];
		}
	for (size_t i = 0; i < npix; i++)
	{
		out[3 * i] = lut[0][rgb[3 * i]];
		out[3 * i + 1] = lut[1][rgb[3 * i + 1]];
		out[3 * i + 2] = lut[2][rgb[3 * i + 2]];
	}
}

static tl_code
check_image(const tl_image *img, tl_error *err)
{
	if (img == NULL || img->rgb == NULL || img->width <= 0 || img->height <= 0)
		return tl_fail(err, TL_E_INVALID, "no decoded image to transform");
	return TL_OK;
}

static tl_code
check_output_size(const char *what, int size, tl_error *err)
{
	if (size <= 0 || size > TL_MAX_OUTPUT_SIDE)
		return tl_fail(err, TL_E_INVALID, "%s %d is out of range (1 to %d)",
					   what, size, TL_MAX_OUTPUT_SIDE);
	return TL_OK;
}

/* Python's int(round(d / 2.0)) for an integer d >= 0: halves go to even. */
static int
round_half_even_half(int d)
{
	int			q = d / 2;

	if (d % 2 == 0)
		return q;
	return (q % 2 == 0) ? q : q + 1;
}

/*
 * Output rows [row0, row1) of the evaluation transform before ToTensor, as
 * (row1 - row0) * crop * 3 bytes at out; the callers check the row range.
 * Every output pixel depends only on its own resampling weights, so any
 * split of the rows gives the same bytes.
 */
static tl_code
eval_rgb8_rows(const tl_image *img, int resize, int crop, int row0, int row1,
			   uint8_t *out, tl_error *err)
{
	int			w,
				h,
				short_side,
				long_side,
				new_w,
				new_h;
	int64_t		new_long;
	int			off_x,
				off_y,
				x0,
				y0,
				x1,
				y1;
	tl_code		rc;

	if ((rc = check_image(img, err)) != TL_OK ||
		(rc = check_output_size("resize", resize, err)) != TL_OK ||
		(rc = check_output_size("crop size", crop, err)) != TL_OK)
		return rc;
	w = img->width;
	h = img->height;

	/* torchvision _compute_resized_output_size: int(size * long / short) */
	short_side = w <= h ? w : h;
	long_side = w <= h ? h : w;
	new_long = (int64_t) ((double) ((int64_t) resize * long_side) / (double) short_side);
	if (new_long > TL_MAX_RESIZED_SIDE)
		return tl_fail(err, TL_E_LIMIT,
					   "a %dx%d image resized to %d on its shorter side is too large", w, h, resize);
	new_w = w <= h ? resize : (int) new_long;
	new_h = w <= h ? (int) new_long : resize;

	/*
	 * center_crop: pad with zeros where the crop is larger than the image,
	 * otherwise offset by round((side - crop) / 2).  Output pixel (x, y)
	 * shows resized pixel (x + off_x, y + off_y).
	 */
	off_x = crop > new_w ? -((crop - new_w) / 2) : round_half_even_half(new_w - crop);
	off_y = crop > new_h ? -((crop - new_h) / 2) : round_half_even_half(new_h - crop);
	x0 = off_x < 0 ? -off_x : 0;
	y0 = off_y < 0 ? -off_y : 0;
	x1 = new_w - off_x < crop ? new_w - off_x : crop;
	y1 = new_h - off_y < crop ? new_h - off_y : crop;
	/* this call's rows of the image part: [y0, y1) within [row0, row1) */
	if (y0 < row0)
		y0 = row0;
	if (y1 > row1)
		y1 = row1;
	if (x0 > 0 || y0 > row0 || x1 < crop || y1 < row1)
		memset(out, 0, (size_t) (row1 - row0) * crop * 3);
	if (y1 <= y0)
		return TL_OK;			/* only padding in these rows */

	return tl_resample_bilinear(img->rgb, w, h, (size_t) w * 3, new_w, new_h,
								x0 + off_x, y0 + off_y, x1 - x0, y1 - y0,
								out + ((size_t) (y0 - row0) * crop + x0) * 3, (size_t) crop * 3,
								err);
}

tl_code
tl_transform_eval_rgb8(const tl_image *img, int resize, int crop, uint8_t *out,
					   tl_error *err)
{
	return eval_rgb8_rows(img, resize, crop, 0, crop, out, err);
}

tl_code
tl_transform_eval_rows(const tl_image *img, int resize, int crop, int row0, int row1,
					   float *out, tl_error *err)
{
	uint8_t    *rgb;
	tl_code		rc;

	if ((rc = check_output_size("crop size", crop, err)) != TL_OK)
		return rc;
	if (row0 < 0 || row1 > crop || row0 >= row1)
		return tl_fail(err, TL_E_INVALID, "rows %d..%d are not within the %d-row crop",
					   row0, row1, crop);
	rgb = malloc((size_t) (row1 - row0) * crop * 3);
	if (rgb == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory transforming an image");
	rc = eval_rgb8_rows(img, resize, crop, row0, row1, rgb, err);
	if (rc == TL_OK)
		tl_normalize_rgb8(rgb, (size_t) (row1 - row0) * crop, out + (size_t) row0 * crop * 3);
	free(rgb);
	return rc;
}

tl_code
tl_transform_eval(const tl_image *img, int resize, int crop, float *out, tl_error *err)
{
	return tl_transform_eval_rows(img, resize, crop, 0, crop, out, err);
}

int
tl_rrc_try_size(int width, int height, double area_frac, double aspect,
				int *crop_height, int *crop_width)
{
	/* target_area = area * uniform; w = int(round(sqrt(target_area * aspect))) */
	double		target_area = (double) ((int64_t) width * height) * area_frac;
	double		fw = rint(sqrt(target_area * aspect));
	double		fh = rint(sqrt(target_area / aspect));

	if (!(fw > 0 && fw <= width && fh > 0 && fh <= height))
		return 0;
	*crop_width = (int) fw;
	*crop_height = (int) fh;
	return 1;
}

tl_crop_box
tl_rrc_fallback_box(int width, int height)
{
	double		in_ratio = (double) width / (double) height;
	tl_crop_box box;

	if (in_ratio < RRC_RATIO_LO)
	{
		box.width = width;
		box.height = (int) rint(width / RRC_RATIO_LO);
	}
	else if (in_ratio > RRC_RATIO_HI)
	{
		box.height = height;
		box.width = (int) rint(height * RRC_RATIO_HI);
	}
	else
	{
		box.width = width;
		box.height = height;
	}
	/* rint may land on the full side; never past it */
	if (box.height > height)
		box.height = height;
	if (box.width > width)
		box.width = width;
	if (box.height < 1)
		box.height = 1;
	if (box.width < 1)
		box.width = 1;
	box.top = (height - box.height) / 2;
	box.left = (width - box.width) / 2;
	return box;
}

/* torch's uniform_(lo, hi) on a float tensor: 24 random bits, then x * (hi - lo) + lo in fp32. */
static float
uniform_f32(tl_rng *rng, float lo, float hi)
{
	float		x = (float) (tl_rng_next(rng) >> 40) * 0x1.0p-24f;
	float		scaled = x * (hi - lo);

	return scaled + lo;
}

tl_crop_box
tl_rrc_sample(int width, int height, tl_rng *rng)
{
	const float log_lo = logf((float) RRC_RATIO_LO);
	const float log_hi = logf((float) RRC_RATIO_HI);
	tl_crop_box box;

	for (int t = 0; t < 10; t++)
	{
		double		area_frac = uniform_f32(rng, (float) RRC_SCALE_LO, (float) RRC_SCALE_HI);
		double		aspect = expf(uniform_f32(rng, log_lo, log_hi));
		int			h,
					w;

		if (tl_rrc_try_size(width, height, area_frac, aspect, &h, &w))
		{
			box.height = h;
			box.width = w;
			box.top = (int) tl_rng_below(rng, (uint64_t) (height - h) + 1);
			box.left = (int) tl_rng_below(rng, (uint64_t) (width - w) + 1);
			return box;
		}
	}
	return tl_rrc_fallback_box(width, height);
}

tl_code
tl_transform_crop_rgb8(const tl_image *img, tl_crop_box box, int size, int flip,
					   uint8_t *out, tl_error *err)
{
	tl_code		rc;

	if ((rc = check_image(img, err)) != TL_OK ||
		(rc = check_output_size("output size", size, err)) != TL_OK)
		return rc;
	if (box.top < 0 || box.left < 0 || box.height <= 0 || box.width <= 0 ||
		box.height > img->height - box.top || box.width > img->width - box.left)
		return tl_fail(err, TL_E_INVALID,
					   "crop box %dx%d at (%d, %d) is outside the %dx%d image",
					   box.width, box.height, box.left, box.top, img->width, img->height);
	rc = tl_resample_bilinear(img->rgb + ((size_t) box.top * img->width + box.left) * 3,
							  box.width, box.height, (size_t) img->width * 3,
							  size, size, 0, 0, size, size, out, (size_t) size * 3, err);
	if (rc != TL_OK || !flip)
		return rc;
	for (int y = 0; y < size; y++)
	{
		uint8_t    *row = out + (size_t) y * size * 3;

		for (int a = 0, b = size - 1; a < b; a++, b--)
			for (int c = 0; c < 3; c++)
			{
				uint8_t		tmp = row[3 * a + c];

				row[3 * a + c] = row[3 * b + c];
				row[3 * b + c] = tmp;
			}
	}
	return TL_OK;
}

tl_code
tl_transform_train_rgb8(const tl_image *img, int size, tl_rng *rng, uint8_t *out,
						tl_error *err)
{
	tl_crop_box box;
	int			flip;
	tl_code		rc;

	if ((rc = check_image(img, err)) != TL_OK)
		return rc;
	box = tl_rrc_sample(img->width, img->height, rng);
	/* RandomHorizontalFlip: flip when torch.rand(1) < p */
	flip = tl_rng_uniform(rng) < 0.5;
	return tl_transform_crop_rgb8(img, box, size, flip, out, err);
}

tl_code
tl_transform_train(const tl_image *img, int size, tl_rng *rng, float *out, tl_error *err)
{
	uint8_t    *rgb;
	tl_code		rc;

	if ((rc = check_output_size("output size", size, err)) != TL_OK)
		return rc;
	rgb = malloc((size_t) size * size * 3);
	if (rgb == NULL)
		return tl_fail(err, TL_E_NOMEM, "out of memory transforming an image");
	rc = tl_transform_train_rgb8(img, size, rng, rgb, err);
	if (rc == TL_OK)
		tl_normalize_rgb8(rgb, (size_t) size * size, out);
	free(rgb);
	return rc;
}
