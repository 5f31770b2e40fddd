/*
 * fuzz_image.c - libFuzzer harness for the image decoder and transforms.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       test/fuzz/fuzz_image.c src/core/image/*.c src/core/tl_error.c \
 *       src/core/tl_rng.c -ljpeg -lpng -lm -o build/fuzz/fuzz_image
 *   build/fuzz/fuzz_image -max_total_time=60 CORPUS_DIR test/fuzz/corpus/image
 *
 * (test/t/fuzz_image.sh does exactly this.)  Each input is probed, decoded
 * with a small pixel limit (so the fuzzer explores parsing, not huge
 * allocations) and, when it decodes, run through both transforms.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/tl_image.h"

#define FUZZ_MAX_PIXELS (4 * 1024 * 1024)
#define FUZZ_SIZE 24

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tl_error	err;
	tl_image	img;
	tl_image_format fmt;
	int			w,
				h;
	float		out[FUZZ_SIZE * FUZZ_SIZE * 3];
	tl_rng		rng;

	if (tl_image_probe(data, size, &fmt, &w, &h, &err) != TL_OK)
	{
		/* A refused probe must say why. */
		if (err.message[0] == '\0')
			abort();
	}
	if (tl_image_decode(data, size, FUZZ_MAX_PIXELS, &img, &err) != TL_OK)
	{
		if (img.rgb != NULL || err.message[0] == '\0')
			abort();
		return 0;
	}
	if (img.width <= 0 || img.height <= 0 || (int64_t) img.width * img.height > FUZZ_MAX_PIXELS)
		abort();
	if (tl_transform_eval(&img, tl_eval_resize_for(FUZZ_SIZE), FUZZ_SIZE, out, &err) != TL_OK)
		abort();
	tl_rng_seed(&rng, size);
	for (int i = 0; i < 2; i++)
		if (tl_transform_train(&img, FUZZ_SIZE, &rng, out, &err) != TL_OK)
			abort();
	tl_image_free(&img);
	return 0;
}
