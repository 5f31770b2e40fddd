/*
 * PyTorch parity of the engine: replays the cases that
 * test/scripts/make_engine_fixtures.py computed with torch 1.13 and compares
 * logits, loss, every gradient, parameters, BN running statistics and
 * momentum buffers after the SGD steps, and eval-mode logits.
 *
 *   test_resnet_parity                 the committed small cases
 *   test_resnet_parity FILE...         other cases (the full 224x224 ones)
 *
 * Tolerances (per tensor, relative to the reference tensor's largest
 * magnitude, i.e. max|ours - torch| <= tol * max|torch|):
 *   logits and loss                          1e-4
 *   gradients                                1e-3
 *   parameters, BN statistics                1e-3 (after the steps)
 *   momentum buffers                         1e-3, relative to the larger of
 *       the buffer's and the step-0 gradient's largest magnitude: the buffer
 *       is a sum of gradients, which can cancel to far below their size
 * The measured worst ratios are printed as diagnostics.
 *
 * Full-size cases (224x224, base width 64) also carry a float64 PyTorch run
 * of the same steps, and there gradients, parameters and momentum buffers are
 * measured against float64 instead.  At that size a few ReLU or max-pool
 * near-ties out of millions are decided by float32 rounding, differently by
 * any two float32 engines (and by the same engine at another thread count);
 * one such flip moves one pixel's gradient and, through BatchNorm's batch
 * statistics, every gradient below it by a few 1e-3.  Measured: float32
 * PyTorch is ~3e-3 (relative L2) and up to 5e-2 (max, in layer4.0.conv1)
 * from float64 for this fixture.  So a tensor passes if it is within the
 * tolerance above everywhere, or if its relative L2 distance to float64,
 * ||ours - f64|| / ||f64||, is at most L2_TOL or at most TORCH_FACTOR times
 * float32 PyTorch's; every tensor that needed this prints both distances.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_util.h"
#include "float_util.h"
#include "tap.h"
#include "checkpoint/tl_checkpoint.h"
#include "nn/tl_resnet.h"

#define TOL_LOGITS 1e-4
#define TOL_GRAD 1e-3
#define TOL_STATE 1e-3
#define L2_TOL 1e-2
#define TORCH_FACTOR 2.0

static const char *const default_cases[] = {
	"test/fixtures/engine/finetune_w4.safetensors",
	"test/fixtures/engine/finetune_w8.safetensors",
	"test/fixtures/engine/feature_w8.safetensors",
};

/* max|a - b| / max|b| (b is the reference); 0/0 counts as 0 */
static double
rel_err(const float *a, const float *b, int64_t n)
{
	double		md = 0,
				mb = 0;

	for (int64_t i = 0; i < n; i++)
	{
		double		d = fabs((double) a[i] - b[i]);

		if (!(d <= md))			/* NaN propagates */
			md = d;
		if (fabs(b[i]) > mb)
			mb = fabs(b[i]);
	}
	if (mb == 0)
		return md == 0 ? 0 : INFINITY;
	return md / mb;
}

/*
 * ours against ref64 (float64 run) channel by channel, errors relative to
 * scale (the tensor's largest reference magnitude, or more); returns the
 * worst channel error and counts channels above tol.
 */
static double
channel_err(const float *ours, const tl_tensor *ref64, double scale, double tol, int *over)
{
	int64_t		n = tl_tensor_numel(ref64);
	int64_t		rows = ref64->ndim > 0 ? ref64->shape[0] : 1;
	int64_t		per = rows > 0 ? n / rows : 0;
	double		worst = 0;

	*over = 0;
	for (int64_t r = 0; r < rows; r++)
	{
		double		md = 0;

		for (int64_t i = r * per; i < (r + 1) * per; i++)
		{
			double		d = fabs((double) ours[i] - ref64->data[i]);

			if (!(d <= md))
				md = d;
		}
		md = scale > 0 ? md / scale : (md == 0 ? 0 : INFINITY);
		if (!(md <= tol))
			(*over)++;
		if (!(md <= worst))
			worst = md;
	}
	return worst;
}

/* ||a - b|| / ||b|| */
static double
rel_l2(const float *a, const float *b, int64_t n)
{
	double		d = 0,
				r = 0;

	for (int64_t i = 0; i < n; i++)
	{
		d += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
		r += (double) b[i] * b[i];
	}
	return r > 0 ? sqrt(d / r) : (d == 0 ? 0 : INFINITY);
}


/*
 * Check one tensor: against the float64 twin "f64.<key>" if the fixture has
 * one (per-channel rule above), else against float32 PyTorch.  scale_floor
 * raises the relative scale (momentum buffers).  Returns true if within.
 */
static bool
check_tensor(const tl_state_dict *fx, const char *key, const float *ours, double tol,
			 double scale_floor, double *worst)
{
	char		k64[320];
	const tl_tensor *ref = tl_sd_find(fx, key);
	const tl_tensor *ref64;
	double		e;

	snprintf(k64, sizeof k64, "f64.%s", key);
	ref64 = tl_sd_find(fx, k64);
	if (!ref || !ours)
		return false;
	if (ref64)
	{
		int			over;
		int64_t		n = tl_tensor_numel(ref64);
		double		scale = max_abs(ref64->data, n);
		double		l2_ours = rel_l2(ours, ref64->data, n),
					l2_torch = rel_l2(ref->data, ref64->data, n);

		if (scale_floor > scale)
			scale = scale_floor;
		e = channel_err(ours, ref64, scale, tol, &over);
		if (e > *worst)
			*worst = e;
		if (over == 0)
			return true;
		/* near-ties decided differently: judge the whole tensor (see header) */
		if (l2_ours <= L2_TOL || l2_ours <= TORCH_FACTOR * l2_torch)
		{
			diag("%s vs float64: max %.2e; relative L2 %.2e (float32 PyTorch: max %.2e, L2 %.2e)",
				 key, e, l2_ours, rel_err(ref->data, ref64->data, n) * max_abs(ref64->data, n) / scale,
				 l2_torch);
			return true;
		}
		diag("FAIL %s vs float64: max %.2e; relative L2 %.2e (float32 PyTorch: L2 %.2e)", key, e,
			 l2_ours, l2_torch);
		return false;
	}
	e = rel_err(ours, ref->data, tl_tensor_numel(ref));
	if (scale_floor > 0)
	{
		double		mref = max_abs(ref->data, tl_tensor_numel(ref));

		if (scale_floor > mref && mref > 0)
			e = e * mref / scale_floor;
	}
	if (e > *worst)
		*worst = e;
	if (!(e <= tol))
		diag("%s: rel err %.2e", key, e);
	return e <= tol;
}

static bool
ends_with(const char *s, const char *suffix)
{
	size_t		a = strlen(s),
				b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The script's fixture_fill(): U(-1,1) from tl_rng, scaled per kind of tensor. */
static void
fixture_fill(tl_resnet *net, uint64_t seed, tl_error *err)
{
	tl_state_dict *sd = tl_resnet_state_dict(net, err);
	tl_rng		rng;

	tl_rng_seed(&rng, seed);
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int64_t		n = tl_tensor_numel(t);
		float	   *p = tl_resnet_param(net, t->name, NULL);
		double		fan_in = 1;

		for (int d = 1; d < t->ndim; d++)
			fan_in *= (double) t->shape[d];
		for (int64_t j = 0; j < n; j++)
		{
			double		u = tl_rng_uniform(&rng) * 2.0 - 1.0;
			double		v;

			if (ends_with(t->name, "running_var") || (ends_with(t->name, ".weight") && t->ndim == 1))
				v = 1.0 + 0.5 * u;
			else if (ends_with(t->name, "running_mean") || ends_with(t->name, ".bias"))
				v = 0.2 * u;
			else
				v = u * sqrt(6.0 / fan_in);
			p[j] = (float) v;
		}
	}
	tl_sd_free(sd);
}

static const tl_tensor *
need(const tl_state_dict *sd, const char *name)
{
	const tl_tensor *t = tl_sd_find(sd, name);

	if (!t)
		diag("fixture lacks %s", name);
	return t;
}

static void
run_case(const char *path)
{
	size_t		len = 0;
	uint8_t    *bytes = read_file(path, &len);
	tl_state_dict *fx = NULL,
			   *init = NULL;
	tl_ckpt_format fmt;
	tl_ckpt_limits limits = tl_ckpt_default_limits;
	tl_error	err;
	const tl_tensor *config,
			   *sgdc,
			   *input,
			   *labels_t;
	tl_resnet_config cfg;
	tl_resnet  *net = NULL;
	tl_sgd	   *opt = NULL;
	int			N,
				H,
				W,
				steps;
	bool		feature,
				stored;
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char		name[256];
	double		worst_grad = 0,
				worst_state = 0;
	int32_t    *labels = NULL;

	snprintf(name, sizeof name, "%s [%s]", base,
			 tl_get_conv_algorithm() == TL_CONV_WINOGRAD ? "winograd" : "im2col");

	limits.max_total_bytes = (int64_t) 4 << 30;
	limits.max_tensors = 100000;
	if (!bytes)
	{
		ok(0, "%s: read fixture", name);
		return;
	}
	if (tl_checkpoint_read(bytes, len, &limits, &fx, &fmt, &err) != TL_OK)
	{
		ok(0, "%s: parse fixture: %s", name, err.message);
		free(bytes);
		return;
	}
	free(bytes);
	if (!(config = need(fx, "config")) || !(sgdc = need(fx, "sgd")) || !(input = need(fx, "input")) ||
		!(labels_t = need(fx, "labels")))
	{
		ok(0, "%s: fixture complete", name);
		tl_sd_free(fx);
		return;
	}
	cfg.num_classes = (int) config->data[0];
	cfg.base_width = (int) config->data[1];
	N = (int) config->data[2];
	H = (int) config->data[3];
	W = (int) config->data[4];
	feature = config->data[5] != 0;
	steps = (int) config->data[7];
	stored = config->data[8] != 0;
	diag("%s: %d classes, width %d, batch %d, %dx%d, %s, %d steps", name, cfg.num_classes,
		 cfg.base_width, N, H, W, feature ? "feature extractor" : "finetune", steps);

	net = tl_resnet_new(&cfg, &err);
	if (!net || tl_resnet_plan(net, N, H, W, feature ? TL_MODE_FEATURE_EXTRACTOR : TL_MODE_FINETUNE,
							   &err) != TL_OK)
	{
		ok(0, "%s: network: %s", name, err.message);
		goto done;
	}
	if (stored)
	{
		init = tl_resnet_state_dict(net, &err);
		for (int i = 0; i < init->n; i++)
		{
			char		key[300];
			const tl_tensor *t;

			snprintf(key, sizeof key, "param.%s", init->tensors[i].name);
			t = need(fx, key);
			if (!t || tl_tensor_numel(t) != tl_tensor_numel(&init->tensors[i]))
			{
				ok(0, "%s: stored parameters", name);
				goto done;
			}
			memcpy(tl_resnet_param(net, init->tensors[i].name, NULL), t->data,
				   tl_tensor_numel(t) * sizeof(float));
		}
		tl_sd_free(init);
	}
	else
		fixture_fill(net, (uint64_t) config->data[6], &err);
	init = tl_resnet_state_dict(net, &err);

	{
		tl_sgd_config sc = {sgdc->data[0], sgdc->data[1], sgdc->data[2], sgdc->data[3], sgdc->data[4] != 0};

		opt = tl_sgd_new(net, &sc, &err);
		if (!opt)
		{
			ok(0, "%s: optimizer: %s", name, err.message);
			goto done;
		}
	}
	labels = malloc(sizeof(int32_t) * (size_t) tl_tensor_numel(labels_t));
	for (int64_t i = 0; i < tl_tensor_numel(labels_t); i++)
		labels[i] = (int32_t) labels_t->data[i];

	for (int step = 0; step < (steps > 0 ? steps : 1); step++)
	{
		const float *x = input->data + (int64_t) step * N * H * W * 3;
		tl_batch_result res = {0};
		const tl_tensor *loss = need(fx, "loss");

		if (tl_resnet_forward(net, x, N, true, &err) != TL_OK ||
			tl_resnet_loss(net, labels + step * N, N, &res, &err) != TL_OK)
		{
			ok(0, "%s: step %d: %s", name, step, err.message);
			goto done;
		}
		if (step == 0)
		{
			const tl_tensor *lg = need(fx, "logits");
			double		e = lg ? rel_err(tl_resnet_logits(net), lg->data, tl_tensor_numel(lg)) : INFINITY;

			ok(e <= TOL_LOGITS, "%s: train-mode logits within %g (rel err %.2e)", name, TOL_LOGITS, e);
		}
		if (loss)
		{
			double		e = fabs(res.loss - loss->data[step]) / fabs(loss->data[step]);

			ok(e <= TOL_LOGITS, "%s: step %d loss %.6f vs torch %.6f (rel err %.2e)", name, step,
			   res.loss, loss->data[step], e);
		}
		if (steps == 0)
			break;
		if (tl_resnet_backward(net, &err) != TL_OK)
		{
			ok(0, "%s: backward: %s", name, err.message);
			goto done;
		}
		if (step == 0)
		{
			int			ngrads = 0,
						bad = 0;

			for (int i = 0; i < init->n; i++)
			{
				char		key[300];
				const float *g;
				int64_t		n;

				snprintf(key, sizeof key, "grad.%s", init->tensors[i].name);
				g = tl_resnet_grad(net, init->tensors[i].name, &n);
				if (!tl_sd_find(fx, key))
				{
					if (g)
					{
						diag("%s has a gradient torch does not", init->tensors[i].name);
						bad++;
					}
					continue;
				}
				ngrads++;
				if (!check_tensor(fx, key, g, TOL_GRAD, 0, &worst_grad))
					bad++;
			}
			ok(bad == 0 && ngrads == (feature ? 2 : 62),
			   "%s: all %d gradients match (tol %g, worst %.2e)", name, ngrads, TOL_GRAD, worst_grad);
		}
		if (tl_sgd_step(opt, &err) != TL_OK)
		{
			ok(0, "%s: sgd: %s", name, err.message);
			goto done;
		}
	}

	if (steps > 0 && tl_sd_find(fx, "after.fc.weight"))
	{
		int			bad = 0,
					changed = 0;
		tl_state_dict *mom = tl_sgd_state_dict(opt, &err);

		for (int i = 0; i < init->n; i++)
		{
			char		key[300];
			const tl_tensor *ref;
			const char *k = init->tensors[i].name;
			int64_t		n;
			const float *p = tl_resnet_param(net, k, &n);

			snprintf(key, sizeof key, "after.%s", k);
			ref = tl_sd_find(fx, key);
			if (!ref)
			{
				/* not trained and not a running statistic: must be untouched */
				if (memcmp(p, init->tensors[i].data, (size_t) n * sizeof(float)) != 0)
				{
					diag("%s changed but torch leaves it alone", k);
					bad++;
				}
				continue;
			}
			changed++;
			if (!check_tensor(fx, key, p, TOL_STATE, 0, &worst_state))
				bad++;
		}
		ok(bad == 0, "%s: %d parameters and BN statistics after %d steps match (tol %g, worst %.2e), the rest untouched",
		   name, changed, steps, TOL_STATE, worst_state);

		bad = 0;
		worst_state = 0;
		for (int i = 0; mom && i < mom->n; i++)
		{
			char		key[300];
			const tl_tensor *g0;
			double		gscale;

			/* scale: the larger of the buffer's and the step-0 gradient's magnitude */
			snprintf(key, sizeof key, "grad.%s", mom->tensors[i].name);
			g0 = tl_sd_find(fx, key);
			gscale = g0 ? max_abs(g0->data, tl_tensor_numel(g0)) : 0;
			snprintf(key, sizeof key, "momentum.%s", mom->tensors[i].name);
			if (!check_tensor(fx, key, mom->tensors[i].data, TOL_STATE, gscale, &worst_state))
				bad++;
		}
		ok(mom && bad == 0 && mom->n == (feature ? 2 : 62), "%s: %d momentum buffers match (tol %g, worst %.2e)",
		   name, mom ? mom->n : 0, TOL_STATE, worst_state);
		tl_sd_free(mom);
	}

	{
		const tl_tensor *ref = need(fx, "eval_logits");

		if (ref && tl_resnet_forward(net, input->data, N, false, &err) == TL_OK)
		{
			double		e = rel_err(tl_resnet_logits(net), ref->data, tl_tensor_numel(ref));

			ok(e <= TOL_LOGITS, "%s: eval-mode logits within %g (rel err %.2e)", name, TOL_LOGITS, e);
		}
		else
			ok(0, "%s: eval-mode logits", name);
	}
done:
	free(labels);
	tl_sgd_free(opt);
	tl_resnet_free(net);
	tl_sd_free(init);
	tl_sd_free(fx);
}

int
main(int argc, char **argv)
{
	/* TL_TEST_THREADS overrides the thread count (default 2, the product's) */
	tl_set_num_threads(getenv("TL_TEST_THREADS") ? atoi(getenv("TL_TEST_THREADS")) : 2);
	/* both algorithms of the 3x3 convolutions are held to the same tolerances */
	for (int a = 0; a < 2; a++)
	{
		tl_set_conv_algorithm(a == 0 ? TL_CONV_WINOGRAD : TL_CONV_IM2COL);
		if (argc > 1)
			for (int i = 1; i < argc; i++)
				run_case(argv[i]);
		else
			for (size_t i = 0; i < sizeof(default_cases) / sizeof(default_cases[0]); i++)
				run_case(default_cases[i]);
	}
	tl_set_conv_algorithm(TL_CONV_WINOGRAD);
	return tap_done();
}
