/* Unit tests: state dicts, error values and the seeded generator. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tl_error.h"
#include "tl_rng.h"
#include "tl_tensor.h"

static void
test_state_dict(void)
{
	tl_error	err;
	tl_state_dict *sd = tl_sd_new(&err);
	int64_t		shape[2] = {2, 3};
	float		v[6] = {1, 2, 3, 4, 5, 6};
	tl_tensor  *t;
	char		buf[64];

	ok(sd != NULL, "state dict allocates");
	is_int(tl_sd_add(sd, "fc.weight", 2, shape, v, &err), TL_OK, "add fc.weight");
	is_int(tl_sd_add(sd, "fc.bias", 1, shape, NULL, &err), TL_OK, "add zero-filled fc.bias");
	is_int(tl_sd_add(sd, "fc.weight", 2, shape, v, &err), TL_E_CORRUPT, "duplicate key is refused");
	ok(strstr(err.message, "fc.weight") != NULL, "duplicate error names the key");
	t = tl_sd_find(sd, "fc.weight");
	ok(t && t->data[5] == 6.0f && tl_tensor_numel(t) == 6, "find returns a copy of the data");
	ok(tl_sd_find(sd, "nope") == NULL, "unknown key is not found");
	ok(strcmp(tl_shape_str(2, shape, buf, sizeof buf), "[2, 3]") == 0, "shape string");
	ok(tl_sd_remove(sd, "fc.weight") == 1 && sd->n == 1 && strcmp(sd->tensors[0].name, "fc.bias") == 0,
	   "remove keeps order of the rest");
	{
		int64_t		huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 4};

		ok(tl_shape_numel(3, huge, INT64_MAX) == -1, "numel overflow is detected");
		is_int(tl_sd_add(sd, "x", 3, huge, NULL, &err), TL_E_INVALID, "overflowing shape is refused");
	}
	tl_sd_free(sd);
}

static void
test_error(void)
{
	tl_error	err;

	is_int(tl_fail(&err, TL_E_LIMIT, "too big: %d", 7), TL_E_LIMIT, "tl_fail returns its code");
	tl_error_prefix(&err, "reading %s", "x.png");
	ok(strcmp(err.message, "reading x.png: too big: 7") == 0, "prefix composes messages");
	ok(strcmp(tl_code_name(TL_E_FORBIDDEN), "forbidden") == 0, "code names");
	is_int(tl_fail(NULL, TL_E_IO, "no err struct"), TL_E_IO, "NULL err is allowed");
}

static void
test_rng(void)
{
	tl_rng		a, b;
	int			same = 1, inrange = 1;
	int32_t		idx[50];
	int			seen[50] = {0};
	int			perm = 1;
	double		mean = 0;

	tl_rng_seed(&a, 42);
	tl_rng_seed(&b, 42);
	for (int i = 0; i < 1000; i++)
	{
		double		u = tl_rng_uniform(&a);

		if (u != tl_rng_uniform(&b))
			same = 0;
		if (u < 0 || u >= 1)
			inrange = 0;
		mean += u;
	}
	ok(same, "same seed gives the same stream");
	ok(inrange, "uniform draws are in [0, 1)");
	close_to(mean / 1000, 0.5, 0.05, "uniform mean is about 0.5");
	tl_rng_seed(&b, 43);
	ok(tl_rng_next(&a) != tl_rng_next(&b), "different seeds differ");
	for (int i = 0; i < 50; i++)
		idx[i] = i;
	tl_rng_shuffle(&a, idx, 50);
	for (int i = 0; i < 50; i++)
		seen[idx[i]]++;
	for (int i = 0; i < 50; i++)
		if (seen[i] != 1)
			perm = 0;
	ok(perm, "shuffle is a permutation");
}

int
main(void)
{
	test_state_dict();
	test_error();
	test_rng();
	return tap_done();
}
