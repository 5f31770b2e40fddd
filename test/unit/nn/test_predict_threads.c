/*
 * Unit test: an eval forward (what prediction runs) gives bitwise the same
 * logits whatever the thread count.  The PostgreSQL layer picks the count
 * per process (transfer.predict_threads: several threads in a serial query,
 * one in each process of a parallel query), and both must predict exactly
 * the same probabilities.  Full-size ResNet-18 at 224 px and batch 1, the
 * shapes prediction uses, under both convolution algorithms.
 */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "nn/tl_resnet.h"

static void
check_algorithm(tl_conv_algorithm algo, const char *name, int width, int side)
{
	tl_resnet_config cfg = {3, width};
	tl_error	err;
	tl_resnet  *net = tl_resnet_new(&cfg, &err);
	tl_rng		rng;
	int64_t		numel = (int64_t) side * side * 3;
	float	   *x = malloc(sizeof(float) * numel);
	float		ref[3],
				got[3];

	tl_rng_seed(&rng, 14);
	tl_resnet_init_random(net, &rng);
	for (int64_t i = 0; i < numel; i++)
		x[i] = (float) (2.0 * tl_rng_uniform(&rng) - 1.0);
	tl_set_conv_algorithm(algo);
	tl_set_num_threads(1);
	ok(tl_resnet_plan(net, 1, side, side, TL_MODE_FEATURE_EXTRACTOR, &err) == TL_OK,
	   "%s width %d at %d px: planned", name, width, side);
	tl_resnet_predict(net, x, 1, ref, &err);
	for (int threads = 2; threads <= 4; threads++)
	{
		tl_set_num_threads(threads);
		tl_resnet_predict(net, x, 1, got, &err);
		ok(memcmp(ref, got, sizeof ref) == 0,
		   "%s width %d at %d px: %d threads give bitwise the probabilities of 1 (%.9g %.9g %.9g vs %.9g %.9g %.9g)",
		   name, width, side, threads, got[0], got[1], got[2], ref[0], ref[1], ref[2]);
	}
	tl_set_num_threads(1);
	tl_set_conv_algorithm(TL_CONV_WINOGRAD);
	tl_resnet_free(net);
	free(x);
}

int
main(void)
{
	check_algorithm(TL_CONV_WINOGRAD, "winograd", 64, 224);
	check_algorithm(TL_CONV_IM2COL, "im2col", 64, 224);
	check_algorithm(TL_CONV_WINOGRAD, "winograd", 8, 96);
	return tap_done();
}
