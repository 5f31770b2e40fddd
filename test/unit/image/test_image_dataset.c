/*
 * Every hymenoptera image through the C pipeline against torchvision: run by
 * test/t/image_parity.sh, which writes the references with Pillow/torchvision
 * (TL_IMAGE_DATASET_REFS) when torch is importable.  In the plain unit run
 * there are no references and the whole test is skipped.
 *
 * Tolerance: none.  Decoded pixels, the fp32 eval tensor (Resize(256),
 * CenterCrop(224), ToTensor, Normalize; HWC) and the fp32 train tensor for
 * torchvision's RandomResizedCrop box and flip must be bit-identical,
 * compared through a position-weighted hash of the bytes / float bits.
 */
#include <string.h>

#include "image_util.h"
#include "tap.h"
#include "image/tl_image.h"

/* Same as whash() in test/scripts/make_image_fixtures.py. */
static uint64_t
whash8(const uint8_t *v, size_t n)
{
	uint64_t	h = 0;

	for (size_t i = 0; i < n; i++)
		h += (uint64_t) v[i] * ((i * UINT64_C(2654435761) + 1) & 0xffffffffu);
	return h;
}

static uint64_t
whash_f32(const float *v, size_t n)
{
	uint64_t	h = 0;

	for (size_t i = 0; i < n; i++)
	{
		uint32_t	bits;

		memcpy(&bits, &v[i], sizeof(bits));
		h += (uint64_t) bits * ((i * UINT64_C(2654435761) + 1) & 0xffffffffu);
	}
	return h;
}

static void
check_line(const char *line, int *nimages)
{
	char		rel[512],
				status[32];
	int			w,
				h,
				flip,
				pos = 0;
	unsigned long long dec_hash,
				eval_hash,
				train_hash;
	tl_crop_box box;
	size_t		len;
	uint8_t    *data;
	tl_image	img;
	tl_error	err;
	tl_code		rc;
	static float tensor[224 * 224 * 3];

	const char *tab = strchr(line, '\t');

	/* "path<TAB>status fields...": paths may contain spaces ("ant photos.jpg") */
	if (tab == NULL || tab - line >= (long) sizeof(rel) ||
		sscanf(tab + 1, "%31s%n", status, &pos) != 1)
	{
		ok(0, "reference line parses: %s", line);
		return;
	}
	memcpy(rel, line, tab - line);
	rel[tab - line] = '\0';
	pos += (int) (tab + 1 - line);
	data = read_hymenoptera(rel, &len);
	if (!ok(data != NULL, "%s readable", rel))
		return;
	rc = tl_image_decode(data, len, TL_DEFAULT_MAX_PIXELS, &img, &err);
	free(data);
	if (strcmp(status, "ok") != 0)
	{
		/* Pillow did not give a JPEG/PNG image: we must refuse it too */
		if (!ok(rc != TL_OK, "%s (%s for Pillow) is refused: %s", rel, line + pos + 1, err.message))
			tl_image_free(&img);
		return;
	}
	if (sscanf(line + pos, "%d %d %llx %llx %d %d %d %d %d %llx", &w, &h, &dec_hash, &eval_hash,
			   &box.top, &box.left, &box.height, &box.width, &flip, &train_hash) != 10)
	{
		ok(0, "reference line parses: %s", line);
		return;
	}
	if (!is_int(rc, TL_OK, "%s decodes", rel))
	{
		diag("%s", err.message);
		return;
	}
	(*nimages)++;
	ok(img.width == w && img.height == h &&
	   whash8(img.rgb, (size_t) w * h * 3) == dec_hash, "%s pixels equal Pillow's", rel);
	ok(tl_transform_eval(&img, 256, 224, tensor, &err) == TL_OK &&
	   whash_f32(tensor, 224 * 224 * 3) == eval_hash, "%s eval tensor equals torchvision's", rel);
	{
		uint8_t		rgb[224 * 224 * 3];

		ok(tl_transform_crop_rgb8(&img, box, 224, flip, rgb, &err) == TL_OK &&
		   (tl_normalize_rgb8(rgb, 224 * 224, tensor), whash_f32(tensor, 224 * 224 * 3) == train_hash),
		   "%s train tensor for torchvision's box equals torchvision's", rel);
	}
	tl_image_free(&img);
}

int
main(void)
{
	const char *refs = getenv("TL_IMAGE_DATASET_REFS");
	size_t		len;
	char	   *text,
			   *line,
			   *save = NULL;
	int			nimages = 0;

	if (refs == NULL || *refs == '\0')
	{
		printf("1..0 # SKIP TL_IMAGE_DATASET_REFS not set (test/t/image_parity.sh sets it)\n");
		return 0;
	}
	text = (char *) read_file(refs, &len);
	if (!ok(text != NULL, "references %s readable", refs))
		return tap_done();
	text = realloc(text, len + 1);
	text[len] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		check_line(line, &nimages);
	ok(nimages >= 397 || getenv("TL_IMAGE_DATASET_ANY"), "%d images checked", nimages);
	free(text);
	return tap_done();
}
