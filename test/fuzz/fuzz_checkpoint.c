/*
 * fuzz_checkpoint.c - libFuzzer harness for the checkpoint readers.
 *
 * Every input goes through format detection and then through each reader
 * directly (so zip, pickle and safetensors parsing are all reached whatever
 * the first bytes are).  Whatever a reader accepts must survive a round trip
 * through both writers unchanged, which also exercises the writers on
 * arbitrary shapes and names.  Run by test/t/weights_fuzz.sh:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       test/fuzz/fuzz_checkpoint.c src/core/checkpoint/*.c src/core/tl_{tensor,error}.c -lz
 */
#include <stdlib.h>
#include <string.h>

#include "checkpoint/tl_checkpoint.h"

/* Small limits keep the fuzzer's memory in check; the parsing paths are the same. */
static const tl_ckpt_limits fuzz_limits = {
	.max_total_bytes = 16 << 20,
	.max_tensors = 256,
	.max_pickle_depth = 32,
};

static int
same(const tl_state_dict *a, const tl_state_dict *b)
{
	if (a->n != b->n)
		return 0;
	for (int i = 0; i < a->n; i++)
	{
		const tl_tensor *x = &a->tensors[i],
				   *y = &b->tensors[i];

		if (strcmp(x->name, y->name) != 0 || x->ndim != y->ndim ||
			memcmp(x->shape, y->shape, sizeof(int64_t) * x->ndim) != 0 ||
			memcmp(x->data, y->data, (size_t) tl_tensor_numel(x) * 4) != 0)
			return 0;
	}
	return 1;
}

static void
round_trip(const tl_state_dict *sd, int pth)
{
	uint8_t    *file = NULL;
	size_t		len = 0;
	tl_state_dict *back = NULL;
	tl_error	err;
	tl_code		rc;

	rc = pth ? tl_torch_zip_write(sd, &file, &len, &err)
		: tl_safetensors_write(sd, NULL, NULL, 0, &file, &len, &err);
	if (rc != TL_OK)
	{
		/* Writers refuse only names they can't represent (safetensors needs UTF-8). */
		if (rc != TL_E_INVALID)
			abort();
		return;
	}
	if (tl_checkpoint_read(file, len, NULL, &back, NULL, &err) != TL_OK)
	{
		/* A torch zip re-read drops keys ending in num_batches_tracked only if they were int64: never ours. */
		abort();
	}
	if (!same(sd, back))
		abort();
	tl_sd_free(back);
	free(file);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tl_state_dict *sd = NULL;
	tl_error	err;
	tl_code		(*readers[3]) (const uint8_t *, size_t, const tl_ckpt_limits *, tl_state_dict **, tl_error *) = {
		tl_safetensors_read, tl_torch_zip_read, tl_torch_legacy_read
	};

	if (tl_checkpoint_read(data, size, &fuzz_limits, &sd, NULL, &err) == TL_OK)
	{
		round_trip(sd, 0);
		round_trip(sd, 1);
		tl_sd_free(sd);
	}
	else if (sd != NULL || err.message[0] == '\0')
		abort();				/* failures hand back nothing and always say why */
	for (int i = 0; i < 3; i++)
	{
		sd = NULL;
		if (readers[i] (data, size, &fuzz_limits, &sd, &err) == TL_OK)
			tl_sd_free(sd);
		else if (sd != NULL)
			abort();
	}
	return 0;
}
