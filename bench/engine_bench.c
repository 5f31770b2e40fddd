/*
 * engine_bench - time the engine: a batch-4 224x224 training step in both
 * modes, single-image inference, and the batch-4 eval forward (GFLOP/s).
 * Prints "key value" lines (seconds, medians over the repetitions) that
 * bench/engine.sh puts next to PyTorch's; cpu_* are the calling thread's CPU
 * seconds, which with 1 thread measure the work independently of other load
 * on the machine.  Not a test.
 *
 *   engine_bench [threads] [repetitions]
 *
 * TL_CONV_ALGORITHM=im2col selects the plain GEMM 3x3 convolutions
 * (default: winograd, as transfer.conv_algorithm).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/tl_resnet.h"

#define FWD_GFLOP_224 3.63			/* one image, forward */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: with 1 thread, a load-independent measure */
static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
	qsort(v, n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void
die(const char *what, tl_error *err)
{
	fprintf(stderr, "%s: %s\n", what, err->message);
	exit(1);
}

int
main(int argc, char **argv)
{
	int			threads = argc > 1 ? atoi(argv[1]) : 2;
	int			reps = argc > 2 ? atoi(argv[2]) : 10;
	tl_resnet_config cfg = {2, 64};
	tl_error	err;
	tl_rng		rng;
	tl_resnet  *net;
	tl_sgd	   *opt;
	tl_sgd_config sc = {0.001, 0.9, 0, 0, false};
	const int	N = 4,
				S = 224;
	float	   *x = malloc(sizeof(float) * N * S * S * 3);
	int32_t		labels[4] = {0, 1, 1, 0};
	tl_batch_result res = {0};
	double	   *t = malloc(sizeof(double) * (reps > 0 ? reps : 1));
	double	   *c = malloc(sizeof(double) * (reps > 0 ? reps : 1));
	float		probs[2];

	if (reps < 1)
		reps = 1;
	tl_set_num_threads(threads);
	if (getenv("TL_CONV_ALGORITHM") && strcmp(getenv("TL_CONV_ALGORITHM"), "im2col") == 0)
		tl_set_conv_algorithm(TL_CONV_IM2COL);
	tl_rng_seed(&rng, 1);
	for (int i = 0; i < N * S * S * 3; i++)
		x[i] = (float) (2.0 * tl_rng_uniform(&rng) - 1.0);
	net = tl_resnet_new(&cfg, &err);
	if (!net)
		die("new", &err);
	tl_resnet_init_random(net, &rng);
	opt = tl_sgd_new(net, &sc, &err);
	printf("threads %d\nrepetitions %d\n", threads, reps);

	for (int mode = 0; mode < 2; mode++)
	{
		const char *name = mode == 0 ? "finetune" : "feature_extractor";

		if (tl_resnet_plan(net, N, S, S, mode == 0 ? TL_MODE_FINETUNE : TL_MODE_FEATURE_EXTRACTOR,
						   &err) != TL_OK)
			die("plan", &err);
		if (mode == 0)
			printf("planned_bytes_train_b4_224 %zu\n", tl_resnet_planned_bytes(net));
		for (int i = 0; i < 2; i++)
			if (tl_resnet_train_step(net, opt, x, labels, N, &res, &err) != TL_OK)
				die("train", &err);
		for (int i = 0; i < reps; i++)
		{
			double		t0 = now(),
						c0 = cpu_now();

			tl_resnet_train_step(net, opt, x, labels, N, &res, &err);
			t[i] = now() - t0;
			c[i] = cpu_now() - c0;
		}
		printf("train_step_%s %.6f\n", name, median(t, reps));
		printf("cpu_train_step_%s %.6f\n", name, median(c, reps));
	}

	/* eval forward, batch 4: GFLOP/s */
	for (int i = 0; i < reps + 1; i++)
	{
		double		t0 = now(),
					c0 = cpu_now();

		tl_resnet_forward(net, x, N, false, &err);
		if (i > 0)
		{
			t[i - 1] = now() - t0;
			c[i - 1] = cpu_now() - c0;
		}
	}
	{
		double		m = median(t, reps);

		printf("forward_b4 %.6f\n", m);
		printf("cpu_forward_b4 %.6f\n", median(c, reps));
		printf("forward_gflops %.1f\n", N * FWD_GFLOP_224 / m);
	}

	/* single-image inference, planned for batch 1 */
	if (tl_resnet_plan(net, 1, S, S, TL_MODE_FEATURE_EXTRACTOR, &err) != TL_OK)
		die("plan", &err);
	for (int i = 0; i < reps + 1; i++)
	{
		double		t0 = now(),
					c0 = cpu_now();

		tl_resnet_predict(net, x, 1, probs, &err);
		if (i > 0)
		{
			t[i - 1] = now() - t0;
			c[i - 1] = cpu_now() - c0;
		}
	}
	printf("predict_1 %.6f\n", median(t, reps));
	printf("cpu_predict_1 %.6f\n", median(c, reps));
	tl_sgd_free(opt);
	tl_resnet_free(net);
	free(x);
	free(t);
	free(c);
	return 0;
}
