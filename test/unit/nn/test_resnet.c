/*
 * Unit tests: ResNet-18's parameter table, state dict checks, planning and
 * the step entry points (behaviour, not PyTorch parity: see
 * test_resnet_parity.c for that).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "nn/tl_resnet.h"

static tl_resnet *
new_net(int classes, int width)
{
	tl_resnet_config cfg = {classes, width};
	tl_error	err;
	tl_resnet  *net = tl_resnet_new(&cfg, &err);

	if (!net)
		diag("tl_resnet_new: %s", err.message);
	return net;
}

static void
test_keys(void)
{
	tl_resnet  *net = new_net(2, 8);
	tl_error	err;
	tl_state_dict *sd = tl_resnet_state_dict(net, &err);
	int64_t		numel;
	static const char *const order[] = {
		"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
		"layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
		"layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.conv2.weight",
	};
	bool		in_order = true;
	int64_t		total = 0;

	ok(sd != NULL, "state dict of a new network");
	/* 20 BNs x 4 tensors + 20 convs + fc weight and bias */
	is_int(sd->n, 102, "102 tensors (num_batches_tracked is not exported)");
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (strcmp(sd->tensors[i].name, order[i]) != 0)
			in_order = false;
	ok(in_order, "keys start in torchvision order");
	ok(strcmp(sd->tensors[sd->n - 2].name, "fc.weight") == 0 &&
	   strcmp(sd->tensors[sd->n - 1].name, "fc.bias") == 0, "fc comes last");
	{
		tl_tensor  *t = tl_sd_find(sd, "layer2.0.downsample.0.weight");

		ok(t && t->ndim == 4 && t->shape[0] == 16 && t->shape[1] == 8 && t->shape[2] == 1 &&
		   t->shape[3] == 1, "layer2.0.downsample.0.weight is [16, 8, 1, 1]");
		t = tl_sd_find(sd, "layer4.1.conv2.weight");
		ok(t && t->shape[0] == 64 && t->shape[1] == 64 && t->shape[2] == 3,
		   "layer4.1.conv2.weight is [64, 64, 3, 3]");
		t = tl_sd_find(sd, "fc.weight");
		ok(t && t->shape[0] == 2 && t->shape[1] == 64, "fc.weight is [2, 64]");
		ok(tl_sd_find(sd, "layer1.0.downsample.0.weight") == NULL, "layer1 has no downsample");
		t = tl_sd_find(sd, "bn1.running_var");
		ok(t && t->data[0] == 1.0f && tl_sd_find(sd, "bn1.running_mean")->data[3] == 0.0f,
		   "running stats start at 0 / 1");
	}
	for (int i = 0; i < sd->n; i++)
		total += tl_tensor_numel(&sd->tensors[i]);
	{
		/* torchvision resnet18 at width 64 with 1000 classes: 11,689,512 params + 9,600 BN buffer floats */
		tl_resnet  *full = new_net(1000, 64);
		tl_state_dict *fsd = tl_resnet_state_dict(full, &err);
		int64_t		ftotal = 0;

		for (int i = 0; i < fsd->n; i++)
			ftotal += tl_tensor_numel(&fsd->tensors[i]);
		is_int(ftotal, 11689512 + 9600, "full-size element count matches torchvision");
		tl_sd_free(fsd);
		tl_resnet_free(full);
	}
	ok(total > 0, "small net has %lld floats", (long long) total);
	ok(tl_resnet_param(net, "layer3.1.bn2.bias", &numel) != NULL && numel == 32, "param view by key");
	ok(tl_resnet_param(net, "layer3.1.bn2.nope", &numel) == NULL, "unknown key has no view");
	ok(tl_resnet_grad(net, "fc.weight", &numel) == NULL, "no gradient before a backward");
	tl_sd_free(sd);
	tl_resnet_free(net);
}

static void
test_config(void)
{
	tl_resnet_config bad = {0, 8};
	tl_error	err;

	ok(tl_resnet_new(&bad, &err) == NULL && err.code == TL_E_INVALID, "0 classes refused");
	bad.num_classes = 2;
	bad.base_width = 0;
	ok(tl_resnet_new(&bad, &err) == NULL && err.code == TL_E_INVALID, "base width 0 refused");
}

static void
test_check_state_dict(void)
{
	tl_resnet  *net = new_net(5, 8);
	tl_rng		rng;
	tl_error	err;
	tl_state_dict *sd;
	tl_resnet_config cfg = {0, 0};
	int64_t		scalar_shape[1] = {1};

	tl_rng_seed(&rng, 1);
	tl_resnet_init_random(net, &rng);
	sd = tl_resnet_state_dict(net, &err);
	is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_OK, "own state dict checks");
	ok(cfg.num_classes == 5 && cfg.base_width == 8, "infers 5 classes, base width 8");

	is_int(tl_sd_add(sd, "layer1.0.bn1.num_batches_tracked", 0, scalar_shape, NULL, &err), TL_OK,
		   "add num_batches_tracked");
	is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_OK, "num_batches_tracked is accepted");
	tl_sd_add(sd, "layer1.0.conv1.num_batches_tracked", 0, scalar_shape, NULL, &err);
	is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_E_MISMATCH,
		   "num_batches_tracked of a non-BN is unexpected");
	ok(strstr(err.message, "layer1.0.conv1.num_batches_tracked") != NULL, "error names it: %s", err.message);
	tl_sd_remove(sd, "layer1.0.conv1.num_batches_tracked");

	tl_sd_add(sd, "extra.weight", 1, scalar_shape, NULL, &err);
	is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_E_MISMATCH, "unexpected key refused");
	ok(strstr(err.message, "unexpected") && strstr(err.message, "extra.weight"), "names it: %s", err.message);
	tl_sd_remove(sd, "extra.weight");

	{
		tl_tensor	saved = *tl_sd_find(sd, "layer3.0.bn2.running_var");

		tl_sd_find(sd, "layer3.0.bn2.running_var")->shape[0] = 31;
		is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_E_MISMATCH, "mis-shaped key refused");
		ok(strstr(err.message, "layer3.0.bn2.running_var") && strstr(err.message, "[32]") &&
		   strstr(err.message, "[31]"), "names key and both shapes: %s", err.message);
		tl_sd_find(sd, "layer3.0.bn2.running_var")->shape[0] = saved.shape[0];
	}
	tl_sd_remove(sd, "layer2.1.conv2.weight");
	is_int(tl_resnet_check_state_dict(sd, &cfg, &err), TL_E_MISMATCH, "missing key refused");
	ok(strstr(err.message, "missing") && strstr(err.message, "layer2.1.conv2.weight"), "names it: %s",
	   err.message);

	/* load with SKIP_FC: a 5-class backbone into a 2-class net */
	{
		tl_resnet  *two = new_net(2, 8);
		tl_state_dict *full = tl_resnet_state_dict(net, &err);
		float	   *w,
					fc_before;

		w = tl_resnet_param(two, "fc.weight", NULL);
		w[0] = 0.25f;
		fc_before = w[0];
		is_int(tl_resnet_load_state_dict(two, full, 0, &err), TL_E_MISMATCH, "5-class fc does not load strictly");
		ok(strstr(err.message, "fc.weight") != NULL, "error names fc.weight: %s", err.message);
		is_int(tl_resnet_load_state_dict(two, full, TL_LOAD_SKIP_FC, &err), TL_OK, "backbone loads with SKIP_FC");
		ok(tl_resnet_param(two, "fc.weight", NULL)[0] == fc_before, "fc untouched");
		ok(memcmp(tl_resnet_param(two, "layer4.1.conv2.weight", NULL),
				  tl_sd_find(full, "layer4.1.conv2.weight")->data, 64 * 64 * 9 * sizeof(float)) == 0,
		   "backbone copied");
		ok(tl_resnet_param(two, "conv1.weight", NULL)[0] != 0.0f, "conv1 copied");
		tl_sd_free(full);
		tl_resnet_free(two);
	}
	{
		tl_state_dict *empty = tl_sd_new(&err);

		is_int(tl_resnet_check_state_dict(empty, &cfg, &err), TL_E_MISMATCH, "empty dict refused");
		ok(strstr(err.message, "conv1.weight") != NULL, "names conv1.weight");
		tl_sd_free(empty);
	}
	tl_sd_free(sd);
	tl_resnet_free(net);
}

static void
test_init(void)
{
	tl_resnet  *net = new_net(2, 8);
	tl_rng		rng;
	int64_t		n;
	float	   *w;
	double		s = 0,
				ss = 0,
				maxabs = 0;

	tl_rng_seed(&rng, 42);
	tl_resnet_init_random(net, &rng);
	w = tl_resnet_param(net, "layer4.0.conv2.weight", &n);
	for (int64_t i = 0; i < n; i++)
	{
		s += w[i];
		ss += (double) w[i] * w[i];
	}
	/* kaiming normal, fan_out = 64 * 9 -> std sqrt(2/576) = 0.0589 */
	close_to(sqrt(ss / n - (s / n) * (s / n)), sqrt(2.0 / 576), 0.003, "conv std is kaiming fan_out");
	close_to(s / n, 0, 0.002, "conv mean is 0");
	w = tl_resnet_param(net, "fc.weight", &n);
	for (int64_t i = 0; i < n; i++)
		if (fabs(w[i]) > maxabs)
			maxabs = fabs(w[i]);
	ok(maxabs <= 1.0 / sqrt(64) && maxabs > 0.8 / sqrt(64), "fc uniform within 1/sqrt(in) (max %g)", maxabs);
	ok(tl_resnet_param(net, "layer2.0.bn1.weight", NULL)[5] == 1.0f &&
	   tl_resnet_param(net, "layer2.0.bn1.bias", NULL)[5] == 0.0f, "BN weight 1 bias 0");
	tl_resnet_free(net);
}

static void
fill_input(float *x, int64_t count, uint64_t seed)
{
	tl_rng		rng;

	tl_rng_seed(&rng, seed);
	for (int64_t i = 0; i < count; i++)
		x[i] = (float) (2.0 * tl_rng_uniform(&rng) - 1.0);
}

static void
test_steps(tl_train_mode mode, const char *name)
{
	const int	N = 4,
				H = 40,
				W = 36;
	tl_resnet  *net = new_net(3, 8);
	tl_rng		rng;
	tl_error	err;
	float	   *x = malloc(sizeof(float) * N * H * W * 3);
	int32_t		labels[4] = {0, 1, 2, 1};
	int32_t		preds[4];
	tl_batch_result res = {0, 0, preds};
	tl_sgd_config sc = {0.01, 0.9, 0, 0, false};
	tl_sgd	   *opt;
	double		first = 0,
				last = 0;
	float		probs[12];
	float		rm_before;
	bool		stable = true;

	tl_rng_seed(&rng, 7);
	tl_resnet_init_random(net, &rng);
	fill_input(x, (int64_t) N * H * W * 3, 3);
	is_int(tl_resnet_forward(net, x, N, true, &err), TL_E_INVALID, "%s: forward without a plan fails", name);
	is_int(tl_resnet_plan(net, N, H, W, mode, &err), TL_OK, "%s: plan", name);
	ok(tl_resnet_planned_bytes(net) > 0, "%s: planned %zu bytes", name, tl_resnet_planned_bytes(net));
	opt = tl_sgd_new(net, &sc, &err);
	rm_before = tl_resnet_param(net, "layer2.0.bn1.running_mean", NULL)[0];
	for (int step = 0; step < 8; step++)
	{
		if (tl_resnet_train_step(net, opt, x, labels, N, &res, &err) != TL_OK)
		{
			diag("train step: %s", err.message);
			stable = false;
			break;
		}
		if (!isfinite(res.loss))
			stable = false;
		if (step == 0)
			first = res.loss;
		last = res.loss;
	}
	ok(stable, "%s: 8 train steps run with finite loss", name);
	ok(last < first, "%s: loss falls on a fixed batch (%.4f -> %.4f)", name, first, last);
	ok(tl_resnet_param(net, "layer2.0.bn1.running_mean", NULL)[0] != rm_before,
	   "%s: BN running stats update in train mode", name);
	{
		float		fc_grad = tl_resnet_grad(net, "fc.weight", NULL) ? 1 : 0;
		const float *cg = tl_resnet_grad(net, "layer1.0.conv1.weight", NULL);

		ok(fc_grad == 1, "%s: fc has a gradient", name);
		if (mode == TL_MODE_FINETUNE)
			ok(cg != NULL, "%s: backbone has gradients", name);
		else
			ok(cg == NULL, "%s: frozen backbone has no gradient", name);
	}
	{
		tl_state_dict *mom = tl_sgd_state_dict(opt, &err);

		ok(mom && (mode == TL_MODE_FINETUNE ? mom->n == 62 : mom->n == 2),
		   "%s: momentum buffers for the trained parameters only (%d)", name, mom ? mom->n : -1);
		tl_sd_free(mom);
	}

	is_int(tl_resnet_eval_step(net, x, labels, N, &res, &err), TL_OK, "%s: eval step", name);
	ok(res.correct >= 0 && res.correct <= N && preds[0] >= 0 && preds[0] < 3, "%s: eval preds in range", name);
	is_int(tl_resnet_predict(net, x, 1, probs, &err), TL_OK, "%s: predict one image", name);
	close_to(probs[0] + probs[1] + probs[2], 1.0, 1e-5, "%s: probabilities sum to 1", name);
	{
		/* eval forward is deterministic and independent of batch composition */
		float		l1[3];

		tl_resnet_forward(net, x, N, false, &err);
		memcpy(l1, tl_resnet_logits(net), sizeof l1);
		tl_resnet_forward(net, x, 1, false, &err);
		close_to(tl_resnet_logits(net)[1], l1[1], 1e-4, "%s: eval logits do not depend on the batch", name);
	}
	{
		int32_t		badlab[4] = {0, 1, 3, 0};

		is_int(tl_resnet_eval_step(net, x, badlab, N, &res, &err), TL_E_INVALID,
			   "%s: label out of range refused", name);
	}
	is_int(tl_resnet_forward(net, x, N + 1, false, &err), TL_E_INVALID, "%s: batch over the plan refused", name);
	tl_sgd_free(opt);
	tl_resnet_free(net);
	free(x);
}

static void
test_threads_agree(void)
{
	const int	N = 2,
				H = 48,
				W = 48;
	tl_resnet  *net = new_net(2, 8);
	tl_rng		rng;
	tl_error	err;
	float	   *x = malloc(sizeof(float) * N * H * W * 3);
	int32_t		labels[2] = {1, 0};
	tl_batch_result res = {0};
	float		one[4],
				two[4],
				g1,
				g2;
	double		maxdiff = 0;

	tl_rng_seed(&rng, 9);
	tl_resnet_init_random(net, &rng);
	fill_input(x, (int64_t) N * H * W * 3, 5);
	tl_resnet_plan(net, N, H, W, TL_MODE_FINETUNE, &err);
	/* eval forwards first: a train forward moves the running statistics */
	tl_set_num_threads(1);
	tl_resnet_forward(net, x, N, false, &err);
	memcpy(one, tl_resnet_logits(net), sizeof one);
	tl_set_num_threads(2);
	is_int(tl_get_num_threads(), 2, "thread count set");
	tl_resnet_forward(net, x, N, false, &err);
	memcpy(two, tl_resnet_logits(net), sizeof two);
	tl_set_num_threads(1);
	tl_resnet_forward(net, x, N, true, &err);
	tl_resnet_loss(net, labels, N, &res, &err);
	tl_resnet_backward(net, &err);
	g1 = tl_resnet_grad(net, "layer1.0.conv1.weight", NULL)[10];
	tl_set_num_threads(2);
	tl_resnet_forward(net, x, N, true, &err);
	tl_resnet_loss(net, labels, N, &res, &err);
	tl_resnet_backward(net, &err);
	g2 = tl_resnet_grad(net, "layer1.0.conv1.weight", NULL)[10];
	for (int i = 0; i < 4; i++)
		if (fabs(one[i] - two[i]) > maxdiff)
			maxdiff = fabs(one[i] - two[i]);
	ok(maxdiff < 1e-4, "1 and 2 threads give the same logits (max diff %g)", maxdiff);
	close_to(g2, g1, 1e-4 * (fabs(g1) + 1e-3), "1 and 2 threads give the same gradient");
	tl_set_num_threads(1);
	tl_resnet_free(net);
	free(x);
}

static void
test_bn_single_value(void)
{
	tl_resnet  *net = new_net(2, 8);
	tl_error	err;
	float	   *x = calloc(32 * 32 * 3, sizeof(float));
	tl_rng		rng;

	tl_rng_seed(&rng, 1);
	tl_resnet_init_random(net, &rng);
	tl_resnet_plan(net, 1, 32, 32, TL_MODE_FINETUNE, &err);
	/* layer4 is 1x1 at 32 px: batch 1 leaves one value per channel */
	is_int(tl_resnet_forward(net, x, 1, true, &err), TL_E_INVALID, "train batch 1 at 32 px refused like PyTorch");
	is_int(tl_resnet_forward(net, x, 1, false, &err), TL_OK, "eval batch 1 at 32 px works");
	is_int(tl_resnet_plan(net, 1, 31, 32, TL_MODE_FINETUNE, &err), TL_E_INVALID, "31 px refused");
	tl_resnet_free(net);
	free(x);
}

static void
test_steplr(void)
{
	/* step_size 7, gamma 0.1: epochs 0-6 at 0.001, 7-13 at 0.0001 */
	close_to(tl_steplr_lr(0.001, 0.1, 7, 0), 0.001, 1e-15, "StepLR epoch 0");
	close_to(tl_steplr_lr(0.001, 0.1, 7, 6), 0.001, 1e-15, "StepLR epoch 6");
	close_to(tl_steplr_lr(0.001, 0.1, 7, 7), 0.0001, 1e-15, "StepLR epoch 7");
	close_to(tl_steplr_lr(0.001, 0.1, 7, 14), 0.00001, 1e-15, "StepLR epoch 14");
	close_to(tl_steplr_lr(0.5, 1.0, 1, 2147483647), 0.5, 1e-15, "StepLR at a huge epoch returns promptly");
}

int
main(void)
{
	test_keys();
	test_config();
	test_check_state_dict();
	test_init();
	test_steps(TL_MODE_FINETUNE, "finetune");
	test_steps(TL_MODE_FEATURE_EXTRACTOR, "feature extractor");
	test_threads_agree();
	test_bn_single_value();
	test_steplr();
	return tap_done();
}
