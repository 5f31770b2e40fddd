/*
 * Unit tests: PyTorch zip and legacy checkpoints (read against torch-written
 * fixtures and their expected fp32 values), the zip writer, and the corpus
 * of hostile and damaged files in test/fixtures/checkpoint/bad, each named
 * CODE-what.EXT and expected to be refused with tl_code CODE.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "file_util.h"
#include "tap.h"
#include "checkpoint/tl_checkpoint.h"

#define FIXTURES "test/fixtures/checkpoint/"

static tl_state_dict *
read_checkpoint(const char *path, tl_ckpt_format *fmt, tl_error *err)
{
	size_t		len;
	uint8_t    *buf = read_file(path, &len);
	tl_state_dict *sd = NULL;

	if (!buf)
	{
		snprintf(err->message, sizeof err->message, "can't read %s", path);
		return NULL;
	}
	if (tl_checkpoint_read(buf, len, NULL, &sd, fmt, err) != TL_OK)
		sd = NULL;
	free(buf);
	return sd;
}

/* Same keys in the same order, same shapes, same bits. */
static int
same_dicts(const tl_state_dict *a, const tl_state_dict *b, const char *what)
{
	if (a->n != b->n)
	{
		diag("%s: %d tensors, expected %d", what, a->n, b->n);
		return 0;
	}
	for (int i = 0; i < a->n; i++)
	{
		const tl_tensor *x = &a->tensors[i],
				   *y = &b->tensors[i];

		if (strcmp(x->name, y->name) != 0 || x->ndim != y->ndim ||
			memcmp(x->shape, y->shape, sizeof(int64_t) * x->ndim) != 0 ||
			memcmp(x->data, y->data, (size_t) tl_tensor_numel(x) * 4) != 0)
		{
			diag("%s: tensor %d (%s / %s) differs", what, i, x->name, y->name);
			return 0;
		}
	}
	return 1;
}

static void
test_fixture(const char *name, tl_ckpt_format want_fmt)
{
	char		path[256],
				exp_path[256];
	tl_error	err = {0};
	tl_ckpt_format fmt = TL_CKPT_UNKNOWN;
	tl_state_dict *got,
			   *want;

	snprintf(path, sizeof path, FIXTURES "%s.pth", name);
	snprintf(exp_path, sizeof exp_path, FIXTURES "%s.expected.safetensors", name);
	got = read_checkpoint(path, &fmt, &err);
	ok(got != NULL, "%s reads: %s", name, got ? "ok" : err.message);
	is_int(fmt, want_fmt, "%s detected as %s", name, tl_ckpt_format_name(want_fmt));
	want = read_checkpoint(exp_path, NULL, &err);
	ok(want != NULL, "%s expectation reads", name);
	if (got && want)
		ok(same_dicts(got, want, name), "%s: every tensor equals torch's fp32 values bit for bit "
		   "(views, offsets, strides, f16/bf16/f64, num_batches_tracked dropped)", name);
	tl_sd_free(got);
	tl_sd_free(want);
}

/* Every prefix of a valid file is refused; every single-bit flip is refused or read, never crashes. */
static void
test_damage(const char *name)
{
	char		path[256];
	size_t		len;
	uint8_t    *buf;
	int			accepted = 0,
				leaks = 0;
	tl_error	err;

	snprintf(path, sizeof path, FIXTURES "%s", name);
	buf = read_file(path, &len);
	if (!ok(buf != NULL, "%s present", name))
		return;
	for (size_t cut = 0; cut < len; cut++)
	{
		tl_state_dict *sd = NULL;

		if (tl_checkpoint_read(buf, cut, NULL, &sd, NULL, &err) == TL_OK)
			accepted++;
		if (sd && err.code != TL_OK)
			leaks++;
		tl_sd_free(sd);
	}
	is_int(accepted, 0, "%s: all %zu truncations refused", name, len);
	accepted = 0;
	for (size_t pos = 0; pos < len; pos++)
		for (int bit = 0; bit < 8; bit += 3)
		{
			tl_state_dict *sd = NULL;

			buf[pos] ^= (uint8_t) (1 << bit);
			if (tl_checkpoint_read(buf, len, NULL, &sd, NULL, &err) == TL_OK)
				accepted++;
			tl_sd_free(sd);
			buf[pos] ^= (uint8_t) (1 << bit);
		}
	ok(1, "%s: %zu bit flips handled without a crash (%d still read, e.g. flips in padding or values)",
	   name, len * 3, accepted);
	free(buf);
}

static tl_code
code_from_name(const char *name)
{
	static const tl_code codes[] = {TL_E_CORRUPT, TL_E_LIMIT, TL_E_FORBIDDEN, TL_E_UNSUPPORTED};

	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
	{
		const char *c = tl_code_name(codes[i]);

		if (strncmp(name, c, strlen(c)) == 0 && name[strlen(c)] == '-')
			return codes[i];
	}
	return TL_OK;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
test_bad_corpus(void)
{
	DIR		   *d = opendir(FIXTURES "bad");
	struct dirent *de;
	char	   *names[256];
	int			n = 0;

	if (!ok(d != NULL, "bad corpus present"))
		return;
	while ((de = readdir(d)) != NULL && n < 256)
		if (de->d_name[0] != '.')
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, (size_t) n, sizeof(char *), cmp_str);
	ok(n >= 30, "bad corpus has %d files", n);
	for (int i = 0; i < n; i++)
	{
		char		path[512];
		size_t		len;
		uint8_t    *buf;
		tl_error	err = {0};
		tl_state_dict *sd = NULL;
		tl_code		want = code_from_name(names[i]),
					rc;

		snprintf(path, sizeof path, FIXTURES "bad/%s", names[i]);
		buf = read_file(path, &len);
		rc = tl_checkpoint_read(buf ? buf : (uint8_t *) "", len, NULL, &sd, NULL, &err);
		if (!is_int(rc, want, "%s refused as %s", names[i], tl_code_name(want)))
			diag("message: %s", err.message);
		ok(sd == NULL && err.message[0] != '\0', "%s: no dict, message \"%s\"", names[i], err.message);
		if (strstr(names[i], "os-system"))
			ok(strstr(err.message, "pickle global \"os.system\" is not allowed") != NULL,
			   "%s: the message names the global", names[i]);
		if (strstr(names[i], "builtins-eval"))
			ok(strstr(err.message, "\"builtins.eval\"") != NULL, "%s: the message names the global", names[i]);
		if (strstr(names[i], "whole-model"))
			ok(strstr(err.message, "state_dict") != NULL, "%s: the message says to save a state_dict", names[i]);
		tl_sd_free(sd);
		free(buf);
		free(names[i]);
	}
}

static void
test_zip_writer(void)
{
	tl_error	err;
	tl_state_dict *sd = read_checkpoint(FIXTURES "views.expected.safetensors", NULL, &err),
			   *back = NULL;
	uint8_t    *zip = NULL;
	size_t		len = 0;
	tl_ckpt_format fmt;
	int64_t		c[1] = {4};

	if (!ok(sd != NULL, "writer input reads"))
		return;
	tl_sd_add(sd, "bn1.running_var", 1, c, NULL, &err);
	is_int(tl_torch_zip_write(sd, &zip, &len, &err), TL_OK, "zip writes");
	is_int(tl_checkpoint_read(zip, len, NULL, &back, &fmt, &err), TL_OK, "written zip reads back: %s", err.message);
	is_int(fmt, TL_CKPT_TORCH_ZIP, "written zip is a torch zip");
	if (back)
		ok(same_dicts(back, sd, "zip round trip"), "zip round trip is bit-exact, order kept");
	tl_sd_free(back);
	/* the int64 counter written for torchvision's strict load is present in the pickle */
	ok(zip && memmem(zip, len, "bn1.num_batches_tracked", 23) != NULL && memmem(zip, len, "LongStorage", 11) != NULL,
	   "bn1.num_batches_tracked written as an int64 storage");
	free(zip);
	tl_sd_free(sd);
}

static void
test_limits(void)
{
	size_t		len;
	uint8_t    *buf = read_file(FIXTURES "views.pth", &len);
	tl_ckpt_limits lim = tl_ckpt_default_limits;
	tl_state_dict *sd = NULL;
	tl_error	err;

	if (!buf)
		return;
	lim.max_tensors = 3;
	is_int(tl_checkpoint_read(buf, len, &lim, &sd, NULL, &err), TL_E_LIMIT, "tensor count limit: %s", err.message);
	lim = tl_ckpt_default_limits;
	lim.max_total_bytes = 100;
	is_int(tl_checkpoint_read(buf, len, &lim, &sd, NULL, &err), TL_E_LIMIT, "total bytes limit: %s", err.message);
	lim = tl_ckpt_default_limits;
	lim.max_pickle_depth = 2;
	is_int(tl_checkpoint_read(buf, len, &lim, &sd, NULL, &err), TL_E_LIMIT, "pickle depth limit: %s", err.message);
	free(buf);
}

int
main(void)
{
	test_fixture("views", TL_CKPT_TORCH_ZIP);
	test_fixture("views_legacy", TL_CKPT_TORCH_LEGACY);
	test_fixture("views_deflate", TL_CKPT_TORCH_ZIP);
	test_fixture("views_zip64", TL_CKPT_TORCH_ZIP);
	test_fixture("py2_legacy", TL_CKPT_TORCH_LEGACY);
	test_bad_corpus();
	test_zip_writer();
	test_limits();
	test_damage("views.pth");
	test_damage("views_legacy.pth");
	test_damage("views_deflate.pth");
	test_damage("views_zip64.pth");
	return tap_done();
}
