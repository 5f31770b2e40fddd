/*
 * step_profile - process CPU time of a batch-4 224x224 training step per
 * layer and phase.  Built with -DTL_STEP_PROFILE, which turns on the timers
 * in tl_resnet_train.c (never in the extension).  Not a test.
 *
 *   gcc -O3 -march=native -std=gnu11 -DTL_STEP_PROFILE -Isrc/core \
 *       -o build/bench/step_profile bench/step_profile.c $(find src/core -name '*.c') \
 *       -lopenblas -ljpeg -lpng -lz -lm -lpthread
 *   build/bench/step_profile [threads=1] [steps=10] [mode: 0 finetune, 1 feature extractor]
 *
 * With 1 thread the CPU times are the work, whatever else loads the machine.
 */
#include <stdio.h>
#include <stdlib.h>

#include "nn/tl_resnet.h"

void		tl_step_profile_reset(void);
void		tl_step_profile_print(int steps);

int
main(int argc, char **argv)
{
	int			threads = argc > 1 ? atoi(argv[1]) : 1;
	int			steps = argc > 2 ? atoi(argv[2]) : 10;
	int			mode = argc > 3 ? atoi(argv[3]) : 0;
	tl_resnet_config cfg = {2, 64};
	tl_sgd_config sc = {0.001, 0.9, 0, 0, false};
	tl_error	err;
	tl_rng		rng;
	int32_t		labels[4] = {0, 1, 1, 0};
	tl_batch_result res = {0};
	float	   *x = malloc(sizeof(float) * 4 * 224 * 224 * 3);
	tl_resnet  *net;
	tl_sgd	   *opt;

	if (!x || steps < 1)
		return 1;
	tl_set_num_threads(threads);
	tl_rng_seed(&rng, 1);
	for (int i = 0; i < 4 * 224 * 224 * 3; i++)
		x[i] = (float) (2.0 * tl_rng_uniform(&rng) - 1.0);
	if (!(net = tl_resnet_new(&cfg, &err)))
		return 1;
	tl_resnet_init_random(net, &rng);
	if (!(opt = tl_sgd_new(net, &sc, &err)) ||
		tl_resnet_plan(net, 4, 224, 224, mode ? TL_MODE_FEATURE_EXTRACTOR : TL_MODE_FINETUNE,
					   &err) != TL_OK)
		return 1;
	/* two warm-up steps: first touch of the plan's pages */
	for (int i = 0; i < steps + 2; i++)
	{
		if (i == 2)
			tl_step_profile_reset();
		if (tl_resnet_train_step(net, opt, x, labels, 4, &res, &err) != TL_OK)
		{
			fprintf(stderr, "step: %s\n", err.message);
			return 1;
		}
	}
	tl_step_profile_print(steps);
	tl_sgd_free(opt);
	tl_resnet_free(net);
	free(x);
	return 0;
}
