/*
 * The hostile image corpus (test/scripts/make_bad_images.py, written to
 * build/ by test/t/image_hostile.sh, which sets TL_BAD_IMAGES) through
 * tl_image_decode and both transforms.  Skipped in the plain unit run.
 *
 * Every input must give either a clear error (TL_E_UNSUPPORTED, TL_E_CORRUPT
 * or TL_E_LIMIT with a message) or the correct result: the pixels Pillow
 * decodes and the eval crop torchvision computes (compared exactly through a
 * weighted hash).  The manifest says per file which outcomes are allowed.
 */
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "image/tl_image.h"

static uint64_t
whash8(const uint8_t *v, size_t n)
{
	uint64_t	h = 0;

	for (size_t i = 0; i < n; i++)
		h += (uint64_t) v[i] * ((i * UINT64_C(2654435761) + 1) & 0xffffffffu);
	return h;
}

static int
clear_error(tl_code rc, const tl_error *err)
{
	return (rc == TL_E_UNSUPPORTED || rc == TL_E_CORRUPT || rc == TL_E_LIMIT) &&
		strlen(err->message) > 10;
}

static void
check_file(const char *dir, char *line, int *counts)
{
	char	   *file = strtok(line, "\t");
	char	   *expect = strtok(NULL, "\t");
	char	   *pillow = strtok(NULL, "\t");
	char		path[1024];
	size_t		len;
	uint8_t    *data;
	tl_image	img;
	tl_error	err;
	tl_code		rc;
	int			pw = 0,
				ph = 0,
				pillow_ok;
	unsigned long long pix_hash = 0,
				eval_hash = 0;

	if (!file || !expect || !pillow)
		return;
	pillow_ok = sscanf(pillow, "ok %d %d %llx %llx", &pw, &ph, &pix_hash, &eval_hash) == 4;
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	data = read_file(path, &len);
	if (!ok(data != NULL || len == 0, "%s readable", file))
		return;
	rc = tl_image_decode(data ? data : (const uint8_t *) "", len, TL_DEFAULT_MAX_PIXELS, &img, &err);
	{
		/* tl_image_check (a training run's load) must give the decode's verdict */
		tl_error	cerr;
		int			cw,
					ch;
		tl_code		crc = tl_image_check(data ? data : (const uint8_t *) "", len, TL_DEFAULT_MAX_PIXELS,
										 &cw, &ch, &cerr);

		ok(crc == rc && (rc != TL_OK || (cw == img.width && ch == img.height)) &&
		   (rc == TL_OK || strcmp(cerr.message, err.message) == 0),
		   "%s: tl_image_check says %s as the decode does (%s)", file, tl_code_name(crc), tl_code_name(rc));
	}
	free(data);
	if (rc != TL_OK)
	{
		counts[1]++;
		ok(img.rgb == NULL && clear_error(rc, &err), "%s: %s error: %s", file, tl_code_name(rc), err.message);
		if (strcmp(expect, "ok") == 0)
			ok(0, "%s is a valid image and must decode", file);
		else if (strcmp(expect, "limit") == 0)
			is_int(rc, TL_E_LIMIT, "%s is refused for its size", file);
		return;
	}
	counts[0]++;
	if (strcmp(expect, "error") == 0 || strcmp(expect, "limit") == 0)
		ok(0, "%s must not decode (expected %s) but gave %dx%d", file, expect, img.width, img.height);
	else if (!pillow_ok)
		ok(0, "%s decodes to %dx%d but Pillow refuses it (%s)", file, img.width, img.height, pillow);
	else
	{
		uint8_t		eval[32 * 32 * 3];

		ok(img.width == pw && img.height == ph &&
		   whash8(img.rgb, (size_t) img.width * img.height * 3) == pix_hash,
		   "%s decodes to Pillow's %dx%d pixels", file, pw, ph);
		ok(tl_transform_eval_rgb8(&img, 37, 32, eval, &err) == TL_OK &&
		   whash8(eval, sizeof(eval)) == eval_hash, "%s eval crop equals torchvision's", file);
	}
	/* Both full-size transforms must run on whatever decoded. */
	{
		static float out[224 * 224 * 3];
		tl_rng		rng;
		int			fine = 1;

		fine &= tl_transform_eval(&img, 256, 224, out, &err) == TL_OK;
		tl_rng_seed(&rng, 3);
		for (int i = 0; i < 4; i++)
			fine &= tl_transform_train(&img, 224, &rng, out, &err) == TL_OK;
		ok(fine, "%s: eval and train transforms run", file);
	}
	tl_image_free(&img);
}

int
main(void)
{
	const char *dir = getenv("TL_BAD_IMAGES");
	char		path[1024];
	size_t		len;
	char	   *text,
			   *line,
			   *save = NULL;
	int			counts[2] = {0, 0};
	int			n = 0;

	if (dir == NULL || *dir == '\0')
	{
		printf("1..0 # SKIP TL_BAD_IMAGES not set (test/t/image_hostile.sh sets it)\n");
		return 0;
	}
	snprintf(path, sizeof(path), "%s/manifest.txt", dir);
	text = (char *) read_file(path, &len);
	if (!ok(text != NULL, "%s readable", path))
		return tap_done();
	text = realloc(text, len + 1);
	text[len] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		check_file(dir, line, counts);
		n++;
	}
	ok(n >= 40, "%d hostile images (%d decoded, %d refused)", n, counts[0], counts[1]);
	free(text);
	return tap_done();
}
