/*
 * Unit tests: the tutorial's transforms against torchvision 0.14 + Pillow 9.4
 * (references from test/scripts/make_image_fixtures.py).
 *
 * Tolerances, stated: Resize/CenterCrop and resized crops before ToTensor
 * must equal Pillow's uint8 output exactly (0 levels; the issue allows up to
 * 1/255); ToTensor + Normalize must equal torchvision's fp32 bit for bit; the
 * RandomResizedCrop box must equal torchvision's for the same draws.
 */
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "image/tl_image.h"


static int
decode_bytes(uint8_t *data, size_t len, const char *path, tl_image *img)
{
	tl_error	err;
	tl_code		rc;

	if (data == NULL)
		return 0;
	rc = tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, img, &err);
	free(data);
	if (rc != TL_OK)
		diag("%s: %s", path, err.message);
	return rc == TL_OK;
}

static int
decode_file(const char *path, tl_image *img)
{
	size_t		len;
	uint8_t    *data = read_file(path, &len);

	return decode_bytes(data, len, path, img);
}

static int
decode_real(const char *rel, tl_image *img)
{
	size_t		len;
	uint8_t    *data = read_hymenoptera(rel, &len);

	return decode_bytes(data, len, rel, img);
}

/* Compare with a uint8 reference: report max difference and first position. */
static void
compare_rgb8(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
	int			maxd = 0;
	size_t		at = 0;

	for (size_t i = 0; i < n; i++)
	{
		int			d = abs(got[i] - want[i]);

		if (d > maxd)
		{
			maxd = d;
			at = i;
		}
	}
	if (!ok(maxd == 0, "%s equals Pillow (max difference %d levels)", what, maxd))
		diag("first largest difference at byte %zu: %d vs %d", at, got[at], want[at]);
}

static void
check_eval(const char *name, int size, int resize, const char *ref_name)
{
	char		path[512];
	tl_image	img;
	size_t		ref_len;
	uint8_t    *ref = read_fixture(ref_name, &ref_len);
	uint8_t    *got = malloc((size_t) size * size * 3);
	float	   *f = malloc(sizeof(float) * size * size * 3);
	float	   *want_f = malloc(sizeof(float) * size * size * 3);
	tl_error	err;

	snprintf(path, sizeof(path), FIXTURES "%s", name);
	is_int(tl_eval_resize_for(size), resize, "eval resize for %d is %d", size, resize);
	if (!ok(ref && ref_len == (size_t) size * size * 3 && decode_file(path, &img), "%s eval inputs", name))
		goto out;
	if (is_int(tl_transform_eval_rgb8(&img, resize, size, got, &err), TL_OK, "%s eval transform", name))
		compare_rgb8(got, ref, ref_len, name);
	/* The fp32 path is the uint8 path normalised. */
	tl_normalize_rgb8(ref, (size_t) size * size, want_f);
	if (is_int(tl_transform_eval(&img, resize, size, f, &err), TL_OK, "%s fp32 eval transform", name))
		ok(memcmp(f, want_f, sizeof(float) * size * size * 3) == 0, "%s fp32 eval equals normalised reference", name);
	/* row parts, as prediction runs them on its threads, give the same floats */
	{
		const int	cuts[] = {1, size / 2, size - 1};
		int			same = 1;

		for (int c = 0; c < 3 && same; c++)
		{
			memset(f, 0xff, sizeof(float) * size * size * 3);
			same = tl_transform_eval_rows(&img, resize, size, 0, cuts[c], f, &err) == TL_OK &&
				tl_transform_eval_rows(&img, resize, size, cuts[c], size, f, &err) == TL_OK &&
				memcmp(f, want_f, sizeof(float) * size * size * 3) == 0;
		}
		ok(same, "%s eval transform split in row parts equals the whole", name);
	}
	tl_image_free(&img);
out:
	free(ref);
	free(got);
	free(f);
	free(want_f);
}

static void
check_crop(const char *name, int size, tl_crop_box box, int flip, const char *ref_name)
{
	char		path[512];
	tl_image	img;
	size_t		ref_len;
	uint8_t    *ref = read_fixture(ref_name, &ref_len);
	uint8_t    *got = malloc((size_t) size * size * 3);
	tl_error	err;

	snprintf(path, sizeof(path), FIXTURES "%s", name);
	if (ok(ref && ref_len == (size_t) size * size * 3 && decode_file(path, &img), "%s crop inputs", name))
	{
		if (is_int(tl_transform_crop_rgb8(&img, box, size, flip, got, &err), TL_OK, "%s resized crop", name))
			compare_rgb8(got, ref, ref_len, name);
		tl_image_free(&img);
	}
	free(ref);
	free(got);
}

/* Real photos: hash of the 224 eval crop, a few sampled values, hash of a resized crop. */
static void
check_real(const char *line)
{
	char		rel[256];
	int			w,
				h,
				n,
				pos;
	unsigned long long dec_hash,
				eval_hash;
	tl_image	img;
	uint8_t    *crop = malloc(224 * 224 * 3);
	tl_error	err;

	if (sscanf(line, "real %255s %d %d %llx %llx%n", rel, &w, &h, &dec_hash, &eval_hash, &pos) != 5)
	{
		ok(0, "refs line parses: %s", line);
		free(crop);
		return;
	}
	if (!decode_real(rel, &img))
	{
		ok(1, "# SKIP hymenoptera %s not present", rel);
		free(crop);
		return;
	}
	if (is_int(tl_transform_eval_rgb8(&img, 256, 224, crop, &err), TL_OK, "%s eval 256/224", rel))
	{
		const char *p = line + pos;
		int			y,
					x,
					c,
					v,
					bad = 0;

		ok(fnv1a64(crop, 224 * 224 * 3) == eval_hash, "%s 224 eval crop hashes like torchvision's", rel);
		while (sscanf(p, " %d:%d:%d:%d%n", &y, &x, &c, &v, &n) == 4)
		{
			if (crop[(y * 224 + x) * 3 + c] != v)
			{
				diag("%s at y=%d x=%d c=%d: %d, torchvision %d", rel, y, x, c, crop[(y * 224 + x) * 3 + c], v);
				bad++;
			}
			p += n;
		}
		ok(bad == 0, "%s sampled eval values equal torchvision's", rel);
	}
	tl_image_free(&img);
	free(crop);
}

static void
check_realcrop(const char *line)
{
	char		rel[256];
	int			size;
	tl_crop_box box;
	unsigned long long hash;
	tl_image	img;
	uint8_t    *crop;
	tl_error	err;

	if (sscanf(line, "realcrop %255s %d %d %d %d %d %llx", rel, &size, &box.top, &box.left,
			   &box.height, &box.width, &hash) != 7)
	{
		ok(0, "refs line parses: %s", line);
		return;
	}
	if (!decode_real(rel, &img))
	{
		ok(1, "# SKIP hymenoptera %s not present", rel);
		return;
	}
	crop = malloc((size_t) size * size * 3);
	if (is_int(tl_transform_crop_rgb8(&img, box, size, 0, crop, &err), TL_OK, "%s resized crop", rel))
		ok(fnv1a64(crop, (size_t) size * size * 3) == hash, "%s resized crop hashes like torchvision's", rel);
	free(crop);
	tl_image_free(&img);
}

static void
test_refs(void)
{
	size_t		len;
	char	   *text = (char *) read_fixture("refs.txt", &len);
	char	   *line,
			   *save = NULL;
	int			nevals = 0,
				ncrops = 0;

	if (!ok(text != NULL, "refs.txt readable"))
		return;
	text = realloc(text, len + 1);
	text[len] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char		name[256],
					ref[256];
		int			size,
					resize,
					flip;
		tl_crop_box box;

		if (sscanf(line, "eval %255s %d %d %255s", name, &size, &resize, ref) == 4)
		{
			check_eval(name, size, resize, ref);
			nevals++;
		}
		else if (sscanf(line, "crop %255s %d %d %d %d %d %d %255s", name, &size, &box.top, &box.left,
						&box.height, &box.width, &flip, ref) == 8)
		{
			check_crop(name, size, box, flip, ref);
			ncrops++;
		}
		else if (strncmp(line, "real ", 5) == 0)
			check_real(line);
		else if (strncmp(line, "realcrop ", 9) == 0)
			check_realcrop(line);
	}
	ok(nevals >= 20 && ncrops >= 20, "refs.txt has %d eval and %d crop references", nevals, ncrops);
	free(text);
}

static void
test_normalize(void)
{
	size_t		len;
	float	   *want = (float *) read_fixture("normalize.f32", &len);
	uint8_t		ramp[256 * 3];
	float		got[256 * 3];
	int			bad = 0;

	if (!ok(want && len == sizeof(got), "normalize.f32 readable"))
	{
		free(want);
		return;
	}
	for (int v = 0; v < 256; v++)
		ramp[3 * v] = ramp[3 * v + 1] = ramp[3 * v + 2] = (uint8_t) v;
	tl_normalize_rgb8(ramp, 256, got);
	for (int i = 0; i < 256 * 3; i++)
		if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ < 3)
			diag("value %d channel %d: %.9g, torchvision %.9g", i / 3, i % 3, got[i], want[i]);
	ok(bad == 0, "ToTensor + Normalize equals torchvision bit for bit for all 256 values (%d differ)", bad);
	free(want);
}

/* rrc_boxes.txt: W H ntries (area aspect)*ntries top left height width */
static void
test_rrc_boxes(void)
{
	size_t		len;
	char	   *text = (char *) read_fixture("rrc_boxes.txt", &len);
	char	   *line,
			   *save = NULL;
	int			cases = 0,
				bad = 0,
				fallbacks = 0;

	if (!ok(text != NULL, "rrc_boxes.txt readable"))
		return;
	text = realloc(text, len + 1);
	text[len] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char	   *p = line,
				   *end;
		long		v[3];
		double		area[10],
					aspect[10];
		tl_crop_box want,
					got = {-1, -1, -1, -1};
		int			accepted = -1;

		if (line[0] == '#')
			continue;
		for (int i = 0; i < 3; i++)
		{
			v[i] = strtol(p, &end, 10);
			p = end;
		}
		if (v[2] < 1 || v[2] > 10)
		{
			bad++;
			continue;
		}
		for (int t = 0; t < v[2]; t++)
		{
			area[t] = strtod(p, &end);
			p = end;
			aspect[t] = strtod(p, &end);
			p = end;
		}
		if (sscanf(p, "%d %d %d %d", &want.top, &want.left, &want.height, &want.width) != 4)
		{
			bad++;
			continue;
		}
		cases++;
		for (int t = 0; t < v[2] && accepted < 0; t++)
			if (tl_rrc_try_size((int) v[0], (int) v[1], area[t], aspect[t], &got.height, &got.width))
				accepted = t;
		if (accepted >= 0)
		{
			/* torchvision's randint results are taken as given; check they were in range */
			got.top = want.top <= (int) v[1] - got.height ? want.top : -1;
			got.left = want.left <= (int) v[0] - got.width ? want.left : -1;
		}
		else
		{
			fallbacks++;
			got = accepted < 0 && v[2] == 10 ? tl_rrc_fallback_box((int) v[0], (int) v[1]) : got;
		}
		if ((accepted >= 0 && accepted != v[2] - 1) ||
			memcmp(&got, &want, sizeof(got)) != 0)
		{
			if (bad++ < 5)
				diag("%ldx%ld: box (%d %d %d %d) after %d tries, torchvision (%d %d %d %d) after %ld",
					 v[0], v[1], got.top, got.left, got.height, got.width, accepted + 1,
					 want.top, want.left, want.height, want.width, v[2]);
		}
	}
	ok(cases >= 300 && fallbacks >= 10, "%d RandomResizedCrop cases, %d fallbacks", cases, fallbacks);
	ok(bad == 0, "RandomResizedCrop boxes equal torchvision's for the same draws (%d differ)", bad);
	free(text);
}

/* Sampling with tl_rng: boxes are valid, reproducible, and use the whole range. */
static void
test_rrc_sample(void)
{
	tl_rng		a,
				b;
	int			valid = 1,
				same = 1,
				small = 0,
				full = 0;
	int			sizes[][2] = {{500, 375}, {1, 1}, {10000, 1}, {1, 10000}, {3, 2}};

	for (int s = 0; s < 5; s++)
	{
		int			W = sizes[s][0],
					H = sizes[s][1];

		tl_rng_seed(&a, 11);
		tl_rng_seed(&b, 11);
		for (int i = 0; i < 2000; i++)
		{
			tl_crop_box x = tl_rrc_sample(W, H, &a);
			tl_crop_box y = tl_rrc_sample(W, H, &b);

			if (memcmp(&x, &y, sizeof(x)) != 0)
				same = 0;
			if (x.top < 0 || x.left < 0 || x.height < 1 || x.width < 1 ||
				x.top + x.height > H || x.left + x.width > W)
				valid = 0;
			if (s == 0 && (double) x.width * x.height < 0.1 * W * H)
				small++;
			if (s == 0 && x.width * x.height > 0.9 * W * H)
				full++;
		}
	}
	ok(valid, "sampled boxes lie inside the image");
	ok(same, "same seed, same boxes");
	ok(small > 0 && full > 0, "sampled areas span the scale range (%d small, %d large of 2000)", small, full);
}

static void
test_train_transform(void)
{
	size_t		len;
	uint8_t    *data = read_fixture("synth_rgb420.jpg", &len);
	tl_image	img;
	tl_error	err;
	tl_rng		rng;
	uint8_t		a[16 * 16 * 3],
				b[16 * 16 * 3],
				c[16 * 16 * 3];
	int			flips = 0,
				differ = 0;

	if (!ok(data && tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, &img, &err) == TL_OK, "decode for train"))
	{
		free(data);
		return;
	}
	/* The train transform is box + flip draws followed by the crop: replay them. */
	for (int i = 0; i < 200; i++)
	{
		tl_rng		replay;
		tl_crop_box box;
		int			flip;

		tl_rng_seed(&rng, (uint64_t) i);
		replay = rng;
		if (tl_transform_train_rgb8(&img, 16, &rng, a, &err) != TL_OK)
		{
			differ++;
			continue;
		}
		box = tl_rrc_sample(img.width, img.height, &replay);
		flip = tl_rng_uniform(&replay) < 0.5;
		flips += flip;
		tl_transform_crop_rgb8(&img, box, 16, flip, b, &err);
		tl_transform_crop_rgb8(&img, box, 16, !flip, c, &err);
		if (memcmp(a, b, sizeof(a)) != 0 || memcmp(&rng, &replay, sizeof(rng)) != 0)
			differ++;
		/* the flipped crop mirrors the unflipped one */
		for (int y = 0; y < 16; y++)
			for (int x = 0; x < 16; x++)
				if (memcmp(b + (y * 16 + x) * 3, c + (y * 16 + 15 - x) * 3, 3) != 0)
					differ++;
	}
	ok(differ == 0, "train transform = sampled box, flip draw, resized crop (%d mismatches)", differ);
	ok(flips > 70 && flips < 130, "about half of 200 crops flipped (%d)", flips);
	{
		float		f[16 * 16 * 3];
		float		g[16 * 16 * 3];

		tl_rng_seed(&rng, 5);
		tl_transform_train_rgb8(&img, 16, &rng, a, &err);
		tl_normalize_rgb8(a, 16 * 16, g);
		tl_rng_seed(&rng, 5);
		is_int(tl_transform_train(&img, 16, &rng, f, &err), TL_OK, "fp32 train transform");
		ok(memcmp(f, g, sizeof(f)) == 0, "fp32 train transform is the uint8 one normalised");
	}
	{
		tl_crop_box outside = {img.height - 5, 0, 10, 10};

		is_int(tl_transform_crop_rgb8(&img, outside, 16, 0, a, &err), TL_E_INVALID, "box outside the image is refused");
		is_int(tl_transform_eval_rgb8(&img, 0, 16, a, &err), TL_E_INVALID, "resize 0 is refused");
		is_int(tl_transform_train_rgb8(&img, -1, &rng, a, &err), TL_E_INVALID, "size -1 is refused");
	}
	tl_image_free(&img);
	free(data);
}

/* Eval where the crop is larger than the resized image: zero padding like torchvision. */
static void
test_eval_padding(void)
{
	uint8_t		px[2 * 1 * 3] = {10, 20, 30, 40, 50, 60};
	tl_image	img = {2, 1, px};
	uint8_t		out[4 * 4 * 3];
	tl_error	err;

	/* Resize(1) of 2x1 -> 2x1 (unchanged), CenterCrop(4): pad left 1, top 1 */
	is_int(tl_transform_eval_rgb8(&img, 1, 4, out, &err), TL_OK, "eval with padding");
	ok(out[(1 * 4 + 1) * 3] == 10 && out[(1 * 4 + 2) * 3 + 2] == 60, "image placed at (1, 1)");
	ok(out[0] == 0 && out[(0 * 4 + 1) * 3] == 0 && out[(2 * 4 + 1) * 3] == 0 && out[(1 * 4 + 3) * 3] == 0,
	   "padding is zero");
	{
		float		whole[4 * 4 * 3],
					parts[4 * 4 * 3];

		/* row 0 is all padding, row 1 holds the image */
		is_int(tl_transform_eval(&img, 1, 4, whole, &err), TL_OK, "fp32 eval with padding");
		memset(parts, 0xff, sizeof(parts));
		ok(tl_transform_eval_rows(&img, 1, 4, 0, 1, parts, &err) == TL_OK &&
		   tl_transform_eval_rows(&img, 1, 4, 1, 2, parts, &err) == TL_OK &&
		   tl_transform_eval_rows(&img, 1, 4, 2, 4, parts, &err) == TL_OK &&
		   memcmp(parts, whole, sizeof(whole)) == 0, "padded eval in row parts equals the whole");
		is_int(tl_transform_eval_rows(&img, 1, 4, 2, 2, parts, &err), TL_E_INVALID, "an empty row range is refused");
		is_int(tl_transform_eval_rows(&img, 1, 4, 3, 5, parts, &err), TL_E_INVALID, "rows past the crop are refused");
	}
}

int
main(void)
{
	test_normalize();
	test_refs();
	test_rrc_boxes();
	test_rrc_sample();
	test_train_transform();
	test_eval_padding();
	return tap_done();
}
