/*
 * tl_checkpoint.c - format detection and dispatch for weight files, and the
 * helpers the format modules share.
 */
#include "tl_checkpoint.h"
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

const char *
tl_ckpt_format_name(tl_ckpt_format fmt)
{
	switch (fmt)
	{
		case TL_CKPT_TORCH_ZIP:
			return "torch-zip";
		case TL_CKPT_TORCH_LEGACY:
			return "torch-legacy";
		case TL_CKPT_SAFETENSORS:
			return "safetensors";
		case TL_CKPT_UNKNOWN:
			break;
	}
	return "unknown";
}

tl_ckpt_format
tl_ckpt_sniff(const uint8_t *data, size_t len)
{
	/* zip local file header */
	if (len >= 4 && memcmp(data, "PK\003\004", 4) == 0)
		return TL_CKPT_TORCH_ZIP;
	/* pickle protocol 2 whose first object is a LONG1 (the legacy magic number) */
	if (len >= 4 && data[0] == 0x80 && data[1] == 0x02 && data[2] == 0x8a)
		return TL_CKPT_TORCH_LEGACY;
	/* 8-byte little-endian header length followed by a JSON object */
	if (len >= 9 && data[8] == '{')
		return TL_CKPT_SAFETENSORS;
	return TL_CKPT_UNKNOWN;
}

tl_code
tl_checkpoint_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
				   tl_state_dict **out, tl_ckpt_format *fmt, tl_error *err)
{
	tl_ckpt_format f = tl_ckpt_sniff(data, len);

	*out = NULL;
	if (fmt)
		*fmt = f;
	if (!limits)
		limits = &tl_ckpt_default_limits;
	switch (f)
	{
		case TL_CKPT_SAFETENSORS:
			return tl_safetensors_read(data, len, limits, out, err);
		case TL_CKPT_TORCH_ZIP:
			return tl_torch_zip_read(data, len, limits, out, err);
		case TL_CKPT_TORCH_LEGACY:
			return tl_torch_legacy_read(data, len, limits, out, err);
		case TL_CKPT_UNKNOWN:
			break;
	}
	return tl_fail(err, TL_E_UNSUPPORTED,
				   "not a recognised checkpoint (expected a PyTorch .pth zip, a legacy PyTorch file or safetensors)");
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
