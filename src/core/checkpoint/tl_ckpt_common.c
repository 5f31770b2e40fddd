/*
 * tl_ckpt_common.c - what every checkpoint format shares: default limits,
 * element conversion to fp32, UTF-8 checks, BatchNorm's step counter.  The
 * bottom of the checkpoint folder: it calls no other file here.
 */
#include "tl_checkpoint_internal.h"

#include <string.h>

/*
 * ResNet-18 is 45 MB of fp32 and ResNet-152 is 240 MB; 1 GiB leaves room for
 * any torchvision classifier while keeping a hostile file from asking for
 * more memory than a backend should take.
 */
const tl_ckpt_limits tl_ckpt_default_limits = {
	.max_total_bytes = INT64_C(1) << 30,
	.max_tensors = 4096,
	.max_pickle_depth = 32,
};

static float
bits_to_float(uint32_t b)
{
	float		f;

	memcpy(&f, &b, 4);
	return f;
}

/* IEEE half to single, exact (subnormals, infinities and NaN included). */
float
tl_half_to_float(uint16_t h)
{
	uint32_t	sign = (uint32_t) (h & 0x8000) << 16;
	uint32_t	exp = (h >> 10) & 0x1F;
	uint32_t	man = h & 0x3FF;

	if (exp == 0x1F)
	{
		/* NaNs come out quiet, as torch (and the F16C instruction) convert them */
		return bits_to_float(sign | 0x7F800000 | (man ? 0x400000 : 0) | (man << 13));
	}
	if (exp == 0)
	{
		/* zero or subnormal: value is man * 2^-24, exactly representable */
		float		f = (float) man * (1.0f / 16777216.0f);

		return sign ? -f : f;
	}
	return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

void
tl_convert_to_f32(tl_elem_type type, const uint8_t *src, int64_t numel, float *dst)
{
	switch (type)
	{
		case TL_ELEM_F32:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = bits_to_float(tl_get_u32le(src + 4 * i));
			break;
		case TL_ELEM_F16:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = tl_half_to_float((uint16_t) (src[2 * i] | (src[2 * i + 1] << 8)));
			break;
		case TL_ELEM_BF16:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = bits_to_float((uint32_t) (src[2 * i] | (src[2 * i + 1] << 8)) << 16);
			break;
		case TL_ELEM_F64:
			for (int64_t i = 0; i < numel; i++)
			{
				uint64_t	b = tl_get_u64le(src + 8 * i);
				double		d;

				memcpy(&d, &b, 8);
				dst[i] = (float) d;
			}
			break;
	}
}

/* Length of a valid UTF-8 sequence at p (0 if invalid: overlong, surrogate, > U+10FFFF). */
size_t
tl_utf8_seq_len(const uint8_t *p, const uint8_t *end)
{
	uint8_t		c = p[0];
	size_t		n;
	uint32_t	cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if ((size_t) (end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++)
	{
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

bool
tl_utf8_valid(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;

	while (p < end)
	{
		size_t		n = tl_utf8_seq_len(p, end);

		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

bool
tl_ckpt_is_batch_counter(const char *key)
{
	static const char suffix[] = "num_batches_tracked";
	size_t		n = strlen(key),
				s = sizeof(suffix) - 1;

	return n >= s && strcmp(key + n - s, suffix) == 0 && (n == s || key[n - s - 1] == '.');
}

void
tl_put_f32le(uint8_t *dst, const float *src, int64_t numel)
{
	for (int64_t i = 0; i < numel; i++)
	{
		uint32_t	b;

		memcpy(&b, &src[i], 4);
		dst[4 * i] = (uint8_t) b;
		dst[4 * i + 1] = (uint8_t) (b >> 8);
		dst[4 * i + 2] = (uint8_t) (b >> 16);
		dst[4 * i + 3] = (uint8_t) (b >> 24);
	}
}
