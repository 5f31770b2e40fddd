/* Unit tests: the safetensors reader and writer, and its strict header parser. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "checkpoint/tl_checkpoint.h"

#define FIXTURES "test/fixtures/checkpoint/"

/* A file from a header text and n data bytes (value i at byte i). */
static uint8_t *
make_file(const char *header, size_t ndata, size_t *len)
{
	size_t		h = strlen(header);
	uint8_t    *f = malloc(8 + h + ndata + 1);

	for (int i = 0; i < 8; i++)
		f[i] = (uint8_t) ((uint64_t) h >> (8 * i));
	memcpy(f + 8, header, h);
	for (size_t i = 0; i < ndata; i++)
		f[8 + h + i] = (uint8_t) i;
	*len = 8 + h + ndata;
	return f;
}

/* Read a file built from header + ndata bytes; return the code, keep the message in err. */
static tl_code
read_header(const char *header, size_t ndata, tl_error *err)
{
	size_t		len;
	uint8_t    *f = make_file(header, ndata, &len);
	tl_state_dict *sd = NULL;
	tl_code		rc = tl_safetensors_read(f, len, NULL, &sd, err);

	if (rc == TL_OK)
		tl_sd_free(sd);
	else if (sd != NULL)
		rc = TL_E_INTERNAL;		/* a failed read must not hand back a dict */
	free(f);
	return rc;
}

static void
expect_error(const char *header, size_t ndata, tl_code want, const char *needle, const char *what)
{
	tl_error	err = {0};
	tl_code		rc = read_header(header, ndata, &err);

	is_int(rc, want, "%s: refused as %s", what, tl_code_name(want));
	if (needle)
		ok(strstr(err.message, needle) != NULL, "%s: message mentions \"%s\" (%s)", what, needle, err.message);
}

static void
test_round_trip(void)
{
	tl_error	err;
	tl_state_dict *sd = tl_sd_new(&err),
			   *back = NULL;
	int64_t		s1[2] = {2, 3},
				s2[1] = {0},
				s3[4] = {1, 2, 1, 1};
	float		v1[6] = {1.5f, -2.0f, 3.25f, 1e-30f, -0.0f, 65504.0f};
	float		v3[2] = {7, 8};
	const char *mk[2] = {"format", "quote\"and\\slash\n"};
	const char *mv[2] = {"pt", "ünïcode"};
	uint8_t    *file = NULL;
	size_t		len = 0;
	tl_ckpt_format fmt;
	uint64_t	hlen = 0;

	tl_sd_add(sd, "layer1.0.conv1.weight", 2, s1, v1, &err);
	tl_sd_add(sd, "empty", 1, s2, NULL, &err);
	tl_sd_add(sd, "fc.bias", 4, s3, v3, &err);
	is_int(tl_safetensors_write(sd, mk, mv, 2, &file, &len, &err), TL_OK, "write with metadata");
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t) file[i] << (8 * i);
	ok((8 + hlen) % 8 == 0, "data buffer starts 8-byte aligned");
	is_int((long long) len, (long long) (8 + hlen + 8 * 4), "file is header + 8 floats");
	is_int(tl_ckpt_sniff(file, len), TL_CKPT_SAFETENSORS, "sniffed as safetensors");
	is_int(tl_checkpoint_read(file, len, NULL, &back, &fmt, &err), TL_OK, "read back: %s", err.message);
	is_int(fmt, TL_CKPT_SAFETENSORS, "format reported");
	if (back)
	{
		is_int(back->n, 3, "three tensors");
		ok(strcmp(back->tensors[0].name, "layer1.0.conv1.weight") == 0 &&
		   strcmp(back->tensors[1].name, "empty") == 0 &&
		   strcmp(back->tensors[2].name, "fc.bias") == 0, "header order kept");
		ok(memcmp(back->tensors[0].data, v1, sizeof v1) == 0, "values identical bit for bit (incl. -0)");
		ok(back->tensors[2].ndim == 4 && back->tensors[2].shape[1] == 2 && back->tensors[2].data[1] == 8,
		   "shape and data of a 4-d tensor");
		ok(back->tensors[1].ndim == 1 && back->tensors[1].shape[0] == 0, "zero-size tensor kept");
	}
	tl_sd_free(back);

	/* every truncation is refused cleanly */
	{
		int			bad = 0;

		for (size_t cut = 0; cut < len; cut++)
		{
			tl_state_dict *t = NULL;

			if (tl_safetensors_read(file, cut, NULL, &t, &err) == TL_OK || t != NULL)
				bad++;
			tl_sd_free(t);
		}
		is_int(bad, 0, "all %zu truncations refused", len);
	}
	/* single-byte corruptions of the header either fail or parse; never crash (ASan run checks) */
	{
		int			okcount = 0;

		for (size_t pos = 0; pos < 8 + hlen; pos++)
			for (int bit = 0; bit < 8; bit++)
			{
				tl_state_dict *t = NULL;

				file[pos] ^= (uint8_t) (1 << bit);
				if (tl_safetensors_read(file, len, NULL, &t, &err) == TL_OK)
					okcount++;
				tl_sd_free(t);
				file[pos] ^= (uint8_t) (1 << bit);
			}
		ok(okcount < (int) (8 * (8 + hlen)), "bit flips: %d of %d still parse, the rest refused",
		   okcount, (int) (8 * (8 + hlen)));
	}
	free(file);
	tl_sd_free(sd);
}

static void
test_header_errors(void)
{
	tl_error	err;
	tl_state_dict *sd = NULL;
	uint8_t		small[8] = {0};
	uint8_t		giant[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
	uint8_t		longer[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};

	is_int(tl_safetensors_read(small, 4, NULL, &sd, &err), TL_E_CORRUPT, "4-byte file refused");
	is_int(tl_safetensors_read(giant, sizeof giant, NULL, &sd, &err), TL_E_LIMIT, "giant header length refused");
	ok(strstr(err.message, "header length") != NULL, "giant header: %s", err.message);
	is_int(tl_safetensors_read(longer, sizeof longer, NULL, &sd, &err), TL_E_CORRUPT,
		   "header length past the end refused");
	ok(sd == NULL, "no dict on failure");

	expect_error("{}", 0, TL_OK, NULL, "empty header");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ", 8, TL_OK, NULL,
				 "trailing spaces (padding)");
	expect_error("[]", 0, TL_E_CORRUPT, NULL, "array header");
	/* Entries that are not objects must be refused before any member lookup. */
	expect_error("{\"a\":[1,2,3]}", 0, TL_E_CORRUPT, "not an object", "array entry");
	expect_error("{\"a\":\"F32\"}", 0, TL_E_CORRUPT, "not an object", "string entry");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}x", 8, TL_E_CORRUPT,
				 "trailing", "trailing garbage");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}", 8, TL_E_CORRUPT, NULL,
				 "trailing comma");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "leading zero", "leading zero");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
				 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, TL_E_CORRUPT,
				 "duplicate", "duplicate key");
	expect_error("{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "control", "control character");
	expect_error("{\"a\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "UTF-8", "overlong UTF-8");
	expect_error("{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "surrogate", "lone surrogate");
	expect_error("{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "NUL", "escaped NUL");
	expect_error("{\"a\\\"\\u00e9\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
				 TL_OK, NULL, "escapes and a surrogate pair");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, TL_E_CORRUPT, NULL,
				 "unclosed object");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":nul}", 8, TL_E_CORRUPT,
				 NULL, "bad literal");
	expect_error("{\"__metadata__\":{\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}}", 0, TL_E_LIMIT,
				 "nesting", "deep nesting");
	expect_error("{\"__metadata__\":{\"x\":1}}", 0, TL_E_CORRUPT, "__metadata__", "non-string metadata");
	expect_error("{\"__metadata__\":{\"x\":\"y\"}}", 0, TL_OK, NULL, "metadata only");
}

/* Headers built to cost memory or quadratic time are refused early. */
static void
test_header_bounds(void)
{
	size_t		cap = 8 << 20;
	char	   *h = malloc(cap);
	size_t		n;
	tl_error	err = {0};

	n = (size_t) snprintf(h, cap, "{\"__metadata__\":{");
	for (int i = 0; i < 20000; i++)
		n += (size_t) snprintf(h + n, cap - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
	snprintf(h + n, cap - n, "}}");
	is_int(read_header(h, 0, &err), TL_E_LIMIT, "20000 members in one object: %s", err.message);

	n = (size_t) snprintf(h, cap, "{\"a\":{\"dtype\":\"F32\",\"shape\":[");
	for (int i = 0; i < 300000; i++)
		n += (size_t) snprintf(h + n, cap - n, "%s1", i ? "," : "");
	snprintf(h + n, cap - n, "],\"data_offsets\":[0,4]}}");
	is_int(read_header(h, 4, &err), TL_E_LIMIT, "300000 values: %s", err.message);
	free(h);
}

static void
test_offsets(void)
{
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
				 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, TL_E_CORRUPT,
				 "overlaps", "overlapping offsets");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
				 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "overlaps", "aliased offsets");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, TL_E_CORRUPT,
				 "outside", "out-of-range offsets");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
				 TL_E_CORRUPT, "non-negative integers", "offset beyond int64");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, TL_E_CORRUPT,
				 "outside", "reversed offsets");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, TL_E_CORRUPT,
				 "gap", "gap before the first tensor");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, TL_E_CORRUPT,
				 "cover", "unindexed tail");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "need 12", "span disagrees with shape");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "shape", "negative dimension");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, TL_E_CORRUPT,
				 "shape", "fractional dimension");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000,1000000],\"data_offsets\":[0,8]}}", 8,
				 TL_E_LIMIT, "limit", "huge declared shape");
	expect_error("{\"a\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, TL_E_UNSUPPORTED,
				 "I8", "unsupported dtype");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, TL_E_CORRUPT, "data_offsets", "missing offsets");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, TL_E_CORRUPT,
				 "unexpected member", "extra member");
	expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
				 TL_E_UNSUPPORTED, "dimensions", "too many dimensions");
	expect_error("{\"bn1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
				 TL_OK, NULL, "int64 num_batches_tracked is accepted");
	expect_error("{\"fc.weight\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
				 TL_E_UNSUPPORTED, "I64", "other int64 tensor refused");
	{
		tl_error	err;
		size_t		len;
		uint8_t    *f = make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
								  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, &len);
		tl_ckpt_limits lim = tl_ckpt_default_limits;
		tl_state_dict *sd = NULL;

		lim.max_tensors = 1;
		is_int(tl_safetensors_read(f, len, &lim, &sd, &err), TL_E_LIMIT, "tensor count limit");
		lim = tl_ckpt_default_limits;
		lim.max_total_bytes = 4;
		is_int(tl_safetensors_read(f, len, &lim, &sd, &err), TL_E_LIMIT, "total bytes limit");
		free(f);
	}
}

/* dtypes.safetensors: written by test/scripts/make_checkpoints.py; "x.f16" etc. and torch's x.float() as "x.f16.expected". */
static void
test_dtype_fixture(void)
{
	FILE	   *fp = fopen(FIXTURES "dtypes.safetensors", "rb");
	uint8_t    *buf;
	long		n;
	tl_error	err;
	tl_state_dict *sd = NULL;
	const char *names[3] = {"x.f16", "x.bf16", "x.f64"};

	if (!ok(fp != NULL, "dtype fixture present"))
		return;
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = malloc((size_t) n);
	if (fread(buf, 1, (size_t) n, fp) != (size_t) n)
		n = 0;
	fclose(fp);
	is_int(tl_checkpoint_read(buf, (size_t) n, NULL, &sd, NULL, &err), TL_OK, "fixture reads: %s", err.message);
	for (int i = 0; sd && i < 3; i++)
	{
		char		exp_name[64];
		tl_tensor  *got = tl_sd_find(sd, names[i]),
				   *want;

		snprintf(exp_name, sizeof exp_name, "%s.expected", names[i]);
		want = tl_sd_find(sd, exp_name);
		if (!ok(got && want && tl_tensor_numel(got) == tl_tensor_numel(want) && tl_tensor_numel(got) > 0,
				"%s and its expectation present", names[i]))
			continue;
		/* torch's conversion is exact (f16, bf16) or round-to-nearest (f64): compare bits */
		ok(memcmp(got->data, want->data, (size_t) tl_tensor_numel(got) * 4) == 0,
		   "%s converts to the same fp32 bits as torch (%lld values)", names[i],
		   (long long) tl_tensor_numel(got));
	}
	tl_sd_free(sd);
	free(buf);
}

static void
test_metadata(void)
{
	tl_error	err;
	tl_state_dict *sd = tl_sd_new(&err);
	int64_t		shape[1] = {1};
	const char *mk[2] = {"format", "transfer.classes"};
	const char *mv[2] = {"pt", "[\"ants\", \"b\\u00e9es\", \"a \\\"quoted\\\" name\"]"};
	uint8_t    *file = NULL;
	size_t		len = 0;
	char	   *value = NULL;
	char	  **names = NULL;
	int			n = 0;

	tl_sd_add(sd, "w", 1, shape, NULL, &err);
	tl_safetensors_write(sd, mk, mv, 2, &file, &len, &err);
	is_int(tl_safetensors_metadata(file, len, "transfer.classes", &value, &err), TL_OK, "metadata reads");
	ok(value && strcmp(value, mv[1]) == 0, "metadata value comes back as written");
	is_int(tl_json_string_array(value, &names, &n, &err), TL_OK, "class list parses");
	ok(n == 3 && strcmp(names[0], "ants") == 0 && strcmp(names[1], "b\xc3\xa9" "es") == 0 &&
	   strcmp(names[2], "a \"quoted\" name") == 0, "class names decoded (escapes, \\u00e9)");
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(value);
	value = (char *) 1;
	is_int(tl_safetensors_metadata(file, len, "nope", &value, &err), TL_OK, "absent key is not an error");
	ok(value == NULL, "absent key gives NULL");
	is_int(tl_json_string_array("[\"a\", 1]", &names, &n, &err), TL_E_CORRUPT, "non-string element refused");
	ok(names == NULL, "no array on failure");
	is_int(tl_json_string_array("[\"a\"] x", &names, &n, &err), TL_E_CORRUPT, "trailing text refused");
	is_int(tl_json_string_array("{}", &names, &n, &err), TL_E_CORRUPT, "object refused");
	is_int(tl_json_string_array("[]", &names, &n, &err), TL_OK, "empty array");
	ok(n == 0, "empty array has no names");
	free(names);
	is_int(tl_safetensors_metadata(file, 5, "format", &value, &err), TL_E_CORRUPT, "metadata of a truncated file");
	free(file);
	tl_sd_free(sd);
}

int
main(void)
{
	test_metadata();
	test_round_trip();
	test_header_errors();
	test_offsets();
	test_header_bounds();
	test_dtype_fixture();
	return tap_done();
}
