/*
 * test_predict_pipeline.c - the whole prediction path of tl_predict_proba,
 * without a server: decode, eval transform at the model's size
 * (tl_eval_resize_for), ResNet-18 forward in eval mode with the plan the
 * model cache uses (batch 1, TL_MODE_FEATURE_EXTRACTOR) and softmax, against
 * PyTorch's probabilities in test/fixtures/predict/refs.txt
 * (test/scripts/make_predict_fixtures.py).
 *
 * Tolerance: 1e-5 absolute per probability.  Decoding is exact and the
 * transforms match torchvision; what remains is fp32 summation order in the
 * convolutions (observed: at most 3e-7).  A wrong resize rule, train-mode
 * BatchNorm or a missing softmax moves probabilities by far more than 1e-5.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "checkpoint/tl_checkpoint.h"
#include "image/tl_image.h"
#include "nn/tl_resnet.h"

#define REFS "test/fixtures/predict/refs.txt"
#define TOL 1e-5

typedef struct fixture_model
{
	const char *name;
	int			image_size;
	tl_resnet  *net;
} fixture_model;

static tl_resnet *
load_model(const char *name, int image_size)
{
	char		path[256];
	size_t		len;
	uint8_t    *data;
	tl_state_dict *sd = NULL;
	tl_ckpt_format fmt;
	tl_resnet_config cfg;
	tl_resnet  *net = NULL;
	tl_error	err = {0};

	snprintf(path, sizeof(path), "test/fixtures/predict/%s.safetensors", name);
	data = read_file(path, &len);
	if (!ok(data != NULL, "%s: fixture readable", name))
		return NULL;
	if (ok(tl_checkpoint_read(data, len, &tl_ckpt_default_limits, &sd, &fmt, &err) == TL_OK,
		   "%s: safetensors read (%s)", name, err.message) &&
		ok(tl_resnet_check_state_dict(sd, &cfg, &err) == TL_OK, "%s: a ResNet-18 state dict (%s)",
		   name, err.message))
	{
		net = tl_resnet_new(&cfg, &err);
		if (!ok(net != NULL &&
				tl_resnet_load_state_dict(net, sd, 0, &err) == TL_OK &&
				tl_resnet_plan(net, 1, image_size, image_size, TL_MODE_FEATURE_EXTRACTOR, &err) == TL_OK,
				"%s: loaded and planned for batch 1 at %d px (%s)", name, image_size, err.message))
		{
			tl_resnet_free(net);
			net = NULL;
		}
	}
	tl_sd_free(sd);
	free(data);
	return net;
}

int
main(void)
{
	fixture_model models[] = {{"predict_a", 32, NULL}, {"predict_b", 40, NULL}};
	FILE	   *refs;
	char		line[4096];
	int			checked = 0;

	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		models[i].net = load_model(models[i].name, models[i].image_size);

	refs = fopen(REFS, "r");
	if (!ok(refs != NULL, "refs readable"))
		return tap_done();
	while (fgets(line, sizeof(line), refs))
	{
		char	   *save = NULL;
		char	   *model = strtok_r(line, " \n", &save);
		char	   *image = strtok_r(NULL, " \n", &save);
		fixture_model *fm = NULL;
		float		want[16];
		float		got[16];
		float	   *x;
		int			n = 0;
		const tl_resnet_config *cfg;
		size_t		len;
		uint8_t    *bytes;
		tl_image	img = {0};
		tl_error	err = {0};
		double		maxdiff = 0;
		char	   *tok;

		if (model == NULL || model[0] == '#' || image == NULL)
			continue;
		for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
			if (strcmp(models[i].name, model) == 0)
				fm = &models[i];
		while ((tok = strtok_r(NULL, " \n", &save)) != NULL && n < 16)
			want[n++] = strtof(tok, NULL);
		if (fm == NULL || fm->net == NULL)
		{
			ok(0, "%s %s: model available", model, image);
			continue;
		}
		cfg = tl_resnet_get_config(fm->net);
		if (!is_int(n, cfg->num_classes, "%s %s: one reference per class", model, image))
			continue;
		bytes = read_fixture(image, &len);
		x = malloc(sizeof(float) * 3 * fm->image_size * fm->image_size);
		if (ok(bytes && x && tl_image_decode(bytes, len, TL_DEFAULT_MAX_PIXELS, &img, &err) == TL_OK &&
			   tl_transform_eval(&img, tl_eval_resize_for(fm->image_size), fm->image_size, x, &err) == TL_OK &&
			   tl_resnet_predict(fm->net, x, 1, got, &err) == TL_OK,
			   "%s %s: predicted (%s)", model, image, err.message))
		{
			for (int c = 0; c < n; c++)
				if (fabs((double) got[c] - want[c]) > maxdiff)
					maxdiff = fabs((double) got[c] - want[c]);
			if (!ok(maxdiff <= TOL, "%s %s: probabilities within %g of PyTorch's", model, image, TOL))
				printf("#   max |diff| %g\n", maxdiff);
			checked++;
		}
		tl_image_free(&img);
		free(bytes);
		free(x);
	}
	fclose(refs);
	ok(checked >= 40, "%d image/model pairs checked", checked);
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		tl_resnet_free(models[i].net);
	return tap_done();
}
