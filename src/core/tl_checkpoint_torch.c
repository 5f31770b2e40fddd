/*
 * tl_checkpoint_torch.c - PyTorch checkpoints: the zip format of torch.save
 * since 1.6 and the legacy pre-1.6 format.
 */
#include "tl_checkpoint.h"
#include "tl_checkpoint_internal.h"

tl_code
tl_torch_zip_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
				  tl_state_dict **out, tl_error *err)
{
	*out = NULL;
	return tl_fail(err, TL_E_UNSUPPORTED, "PyTorch zip checkpoints are not supported yet");
}

tl_code
tl_torch_legacy_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
					 tl_state_dict **out, tl_error *err)
{
	*out = NULL;
	return tl_fail(err, TL_E_UNSUPPORTED, "legacy PyTorch checkpoints are not supported yet");
}

tl_code
tl_torch_zip_write(const tl_state_dict *sd, uint8_t **out, size_t *len, tl_error *err)
{
	*out = NULL;
	*len = 0;
	return tl_fail(err, TL_E_UNSUPPORTED, "writing PyTorch zip checkpoints is not supported yet");
}
