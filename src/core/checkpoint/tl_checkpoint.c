/*
 * tl_checkpoint.c - format detection and dispatch for weight files: the
 * top of the checkpoint folder, calling down into each format's reader.
 */
#include "tl_checkpoint.h"
#include "tl_checkpoint_internal.h"

#include <string.h>


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
