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

#endif
