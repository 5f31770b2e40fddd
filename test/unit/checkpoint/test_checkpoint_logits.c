/*
 * Parity of exported weights with PyTorch: load a model file that
 * tl_export wrote, run the engine's eval forward on a batch and compare the
 * logits with torch's for the original checkpoint.
 *
 * Needs files that test/t/weights_torch.sh makes with torch; without
 * TL_LOGITS_DIR set it skips, so `make unittest` stays torch-free.
 *   $TL_LOGITS_DIR/model.<ext>  the exported weights (safetensors or pth)
 *   $TL_LOGITS_DIR/batch.f32    int32 n, h, w, then n*h*w*3 floats (NHWC)
 *   $TL_LOGITS_DIR/logits.f32   n * num_classes floats from torch (eval mode)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "file_util.h"
#include "tap.h"
#include "checkpoint/tl_checkpoint.h"
#include "nn/tl_resnet.h"

/*
 * Tolerance: the engine's rule for logits (docs/engine.md):
 * max|ours - torch| <= 1e-4 * max|torch|.  Both sides compute in fp32 with
 * different summation orders, which gives differences of order 1e-5 of the
 * logit scale through 18 layers.
 */
#define REL_TOL 1e-4

int
main(void)
{
	const char *dir = getenv("TL_LOGITS_DIR");
	const char *model = getenv("TL_LOGITS_MODEL");
	char		path[1024];
	uint8_t    *file,
			   *batch,
			   *want_bytes;
	size_t		flen,
				blen,
				wlen;
	tl_state_dict *sd = NULL;
	tl_resnet_config cfg;
	tl_resnet  *net = NULL;
	tl_error	err = {0};
	int32_t		dims[3];
	const float *got;
	const float *want;
	double		maxdiff = 0,
				maxabs = 0;

	if (!dir || !model)
	{
		printf("1..0 # SKIP TL_LOGITS_DIR and TL_LOGITS_MODEL not set (test/t/weights_torch.sh sets them)\n");
		return 0;
	}
	snprintf(path, sizeof path, "%s/%s", dir, model);
	file = read_file(path, &flen);
	snprintf(path, sizeof path, "%s/batch.f32", dir);
	batch = read_file(path, &blen);
	snprintf(path, sizeof path, "%s/logits.f32", dir);
	want_bytes = read_file(path, &wlen);
	if (!ok(file && batch && want_bytes && blen >= 12, "%s, batch and torch logits readable", model))
		return tap_done();
	memcpy(dims, batch, sizeof dims);
	ok(tl_checkpoint_read(file, flen, NULL, &sd, NULL, &err) == TL_OK, "%s reads (%s)", model, err.message);
	if (sd && ok(tl_resnet_check_state_dict(sd, &cfg, &err) == TL_OK, "a ResNet-18 state dict (%s)", err.message))
	{
		net = tl_resnet_new(&cfg, &err);
		ok(net && tl_resnet_load_state_dict(net, sd, 0, &err) == TL_OK &&
		   tl_resnet_plan(net, dims[0], dims[1], dims[2], TL_MODE_FEATURE_EXTRACTOR, &err) == TL_OK,
		   "loaded into the engine and planned for %d x %d x %d (%s)", dims[0], dims[1], dims[2], err.message);
	}
	if (net && is_int((long long) blen, 12 + 4LL * dims[0] * dims[1] * dims[2] * 3, "batch size") &&
		is_int((long long) wlen, 4LL * dims[0] * cfg.num_classes, "one torch logit per image and class") &&
		ok(tl_resnet_forward(net, (const float *) (batch + 12), dims[0], false, &err) == TL_OK,
		   "eval forward (%s)", err.message))
	{
		got = tl_resnet_logits(net);
		want = (const float *) want_bytes;
		for (int i = 0; i < dims[0] * cfg.num_classes; i++)
		{
			maxdiff = fmax(maxdiff, fabs((double) got[i] - want[i]));
			maxabs = fmax(maxabs, fabs((double) want[i]));
		}
		if (!ok(maxdiff <= REL_TOL * maxabs,
				"logits of %d images x %d classes equal torch's within %g x max|logit| (%.3g)",
				dims[0], cfg.num_classes, REL_TOL, maxabs))
			diag("max |diff| %g", maxdiff);
		else
			diag("max |diff| %g", maxdiff);
	}
	tl_resnet_free(net);
	tl_sd_free(sd);
	free(file);
	free(batch);
	free(want_bytes);
	return tap_done();
}
