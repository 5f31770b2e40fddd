/*
 * tl_image.h - image decoding (JPEG via libjpeg-turbo, PNG via libpng) and the
 * tutorial's torchvision transforms, computed as torchvision + Pillow do.
 *
 * Every input buffer is treated as hostile: decoders check the header against
 * max_pixels before any large allocation and report errors through tl_error;
 * library errors never end the process.
 *
 * Tensors produced here are HWC (interleaved RGB) fp32, normalised with the
 * ImageNet mean/std: exactly the NHWC input the network takes.
 *
 * OWNER: image pipeline (issue 4).  This is the contract other modules use;
 * extend it, but keep these entry points.
 */
#ifndef TL_IMAGE_H
#define TL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "tl_error.h"
#include "tl_rng.h"

/* Pillow's default Image.MAX_IMAGE_PIXELS. */
#define TL_DEFAULT_MAX_PIXELS INT64_C(89478485)

/*
 * Hard caps that no max_pixels argument (no setting) can lift: a decode
 * never allocates more than TL_MAX_DECODED_BYTES (1 GiB) for its RGB8
 * pixels, i.e. at most TL_HARD_MAX_PIXELS (357913941) pixels, and no side is
 * longer than TL_MAX_IMAGE_SIDE.  A tiny file declaring 65535x65535 pixels
 * (12 GiB decoded) is refused from its header.
 */
#define TL_MAX_DECODED_BYTES (INT64_C(1) << 30)
#define TL_HARD_MAX_PIXELS (TL_MAX_DECODED_BYTES / 3)
#define TL_MAX_IMAGE_SIDE (65535 * 4)

typedef enum tl_image_format
{
	TL_FMT_UNKNOWN = 0,
	TL_FMT_JPEG,
	TL_FMT_PNG,
	TL_FMT_GIF,
	TL_FMT_WEBP,
	TL_FMT_BMP,
	TL_FMT_TIFF
} tl_image_format;

/* 8-bit RGB, rows top to bottom, owned by the struct. */
typedef struct tl_image
{
	int			width;
	int			height;
	uint8_t    *rgb;			/* width * height * 3 bytes */
} tl_image;

/* Which format the leading bytes announce (magic numbers only). */
tl_image_format tl_image_sniff(const uint8_t *data, size_t len);
const char *tl_image_format_name(tl_image_format fmt);

/*
 * Read the header only: format, width and height.  Used at ingestion to
 * accept or skip files.  Fails (TL_E_UNSUPPORTED) for formats other than JPEG
 * and PNG, TL_E_CORRUPT for a broken header.
 */
tl_code		tl_image_probe(const uint8_t *data, size_t len, tl_image_format *fmt,
						   int *width, int *height, tl_error *err);

/* Decode to RGB8.  On failure *out is left empty (nothing to free). */
tl_code		tl_image_decode(const uint8_t *data, size_t len, int64_t max_pixels,
							tl_image *out, tl_error *err);
void		tl_image_free(tl_image *img);

/*
 * Whether tl_image_decode would decode these bytes, and the image's size,
 * without its pixels: the same answer and error, for less work on a JPEG
 * (decoded at 1/8 scale: every coefficient is still read, only the DC
 * ones transformed).  A PNG is decoded in full.
 */
tl_code		tl_image_check(const uint8_t *data, size_t len, int64_t max_pixels,
						   int *width, int *height, tl_error *err);

/* ImageNet normalisation used by the tutorial. */
extern const float tl_imagenet_mean[3];
extern const float tl_imagenet_std[3];

/*
 * Evaluation transform: Resize(resize) of the shorter side (Pillow bilinear,
 * antialiased when shrinking), CenterCrop(crop), ToTensor, Normalize.
 * out: crop * crop * 3 floats, HWC.
 */
tl_code		tl_transform_eval(const tl_image *img, int resize, int crop,
							  float *out, tl_error *err);

/*
 * The same for output rows [row0, row1) only, written at their place in out
 * (crop * crop * 3 floats): any split of the rows gives tl_transform_eval's
 * floats, so callers may run the parts on several threads.
 */
tl_code		tl_transform_eval_rows(const tl_image *img, int resize, int crop, int row0,
								   int row1, float *out, tl_error *err);

/*
 * Training transform: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3))
 * with torchvision's ten tries and centre-crop fallback, then
 * RandomHorizontalFlip(0.5), ToTensor, Normalize.  Draws from rng.
 * out: size * size * 3 floats, HWC.
 */
tl_code		tl_transform_train(const tl_image *img, int size, tl_rng *rng,
							   float *out, tl_error *err);

/* The crop box of RandomResizedCrop, exposed for parity tests with fixed draws. */
typedef struct tl_crop_box
{
	int			top, left, height, width;
} tl_crop_box;

/*
 * Eval resize for an output size: 256 for 224 (the tutorial), otherwise the
 * same 256/224 ratio rounded to nearest: (size * 256 + 112) / 224.
 */
int			tl_eval_resize_for(int size);

/*
 * ToTensor + Normalize of RGB8 pixels, computed in fp32 exactly as torchvision
 * does ((v / 255 - mean) / std): npix pixels of 3 bytes -> 3 * npix floats.
 */
void		tl_normalize_rgb8(const uint8_t *rgb, size_t npix, float *out);

/* The evaluation transform before ToTensor: crop * crop * 3 bytes of RGB8. */
tl_code		tl_transform_eval_rgb8(const tl_image *img, int resize, int crop,
								   uint8_t *out, tl_error *err);

/*
 * One try of RandomResizedCrop.get_params (scale (0.08, 1), ratio (3/4, 4/3)):
 * area_frac is torchvision's uniform(0.08, 1) draw and aspect its
 * exp(uniform(log 3/4, log 4/3)) draw.  Returns 1 and the crop size when the
 * try fits the image, 0 when torchvision would try again.
 */
int			tl_rrc_try_size(int width, int height, double area_frac, double aspect,
							int *crop_height, int *crop_width);

/* The box torchvision falls back to after ten failed tries. */
tl_crop_box tl_rrc_fallback_box(int width, int height);

/*
 * RandomResizedCrop.get_params with draws from rng: up to ten tries, each
 * drawing area_frac and aspect (in fp32, like torch's uniform_), then the
 * top and left offsets uniformly (torch.randint) for the first try that fits.
 */
tl_crop_box tl_rrc_sample(int width, int height, tl_rng *rng);

/*
 * F.resized_crop(img, box, [size, size], BILINEAR) (crop, then Pillow's
 * resize), mirrored left-right when flip: size * size * 3 bytes of RGB8.
 */
tl_code		tl_transform_crop_rgb8(const tl_image *img, tl_crop_box box, int size,
								   int flip, uint8_t *out, tl_error *err);

/*
 * The training transform before ToTensor: a box from tl_rrc_sample, then a
 * flip with probability 0.5 (one more uniform draw), then the crop.
 */
tl_code		tl_transform_train_rgb8(const tl_image *img, int size, tl_rng *rng,
									uint8_t *out, tl_error *err);

/*
 * torchvision.utils.make_grid's layout for n square tiles of size x size RGB8:
 * min(nrow, n) per row, `padding` pixels around every tile, filled with
 * pad_rgb.  out is malloc'ed (tl_image_free).
 */
tl_code		tl_image_grid(const uint8_t *const *tiles, int n, int size, int nrow,
						  int padding, const uint8_t pad_rgb[3], tl_image *out,
						  tl_error *err);

/* Encode RGB8 as a baseline JPEG (quality 1..100); *out is malloc'ed, free() it. */
tl_code		tl_image_encode_jpeg(const tl_image *img, int quality, uint8_t **out,
								 size_t *out_len, tl_error *err);

#endif
