/* Unit tests: make_grid layout and JPEG encoding (for tl_preview). */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "image/tl_image.h"

static void
test_grid(void)
{
	uint8_t		t[10][4 * 4 * 3];
	const uint8_t *tiles[10];
	const uint8_t pad[3] = {124, 116, 104};
	tl_image	g;
	tl_error	err;
	int			bad = 0;

	for (int k = 0; k < 10; k++)
	{
		memset(t[k], 10 * (k + 1), sizeof(t[k]));
		tiles[k] = t[k];
	}
	/* torchvision make_grid(nrow=8, padding=2): 3 tiles -> 1 row of 3 */
	is_int(tl_image_grid(tiles, 3, 4, 8, 2, pad, &g, &err), TL_OK, "grid of 3");
	ok(g.width == 3 * 6 + 2 && g.height == 6 + 2, "3 tiles: %dx%d like make_grid", g.width, g.height);
	for (int y = 0; y < g.height; y++)
		for (int x = 0; x < g.width; x++)
		{
			int			cx = (x - 2) % 6,
						cy = (y - 2) % 6;
			int			inside = x >= 2 && y >= 2 && cx < 4 && cy < 4 && (x - 2) / 6 < 3;
			const uint8_t *p = g.rgb + (y * g.width + x) * 3;

			if (inside ? p[0] != 10 * ((x - 2) / 6 + 1) : memcmp(p, pad, 3) != 0)
				bad++;
		}
	ok(bad == 0, "tiles at (2 + 6k, 2), padding elsewhere (%d wrong pixels)", bad);
	tl_image_free(&g);

	is_int(tl_image_grid(tiles, 10, 4, 8, 2, pad, &g, &err), TL_OK, "grid of 10");
	ok(g.width == 8 * 6 + 2 && g.height == 2 * 6 + 2, "10 tiles: 8 per row, 2 rows (%dx%d)", g.width, g.height);
	ok(g.rgb[((6 + 2) * g.width + 2) * 3] == 90 && g.rgb[((6 + 2) * g.width + 8) * 3] == 100,
	   "second row holds tiles 9 and 10");
	ok(memcmp(g.rgb + ((6 + 2) * g.width + 14) * 3, pad, 3) == 0, "unused cells are padding");
	tl_image_free(&g);
	is_int(tl_image_grid(tiles, 0, 4, 8, 2, pad, &g, &err), TL_E_INVALID, "empty grid refused");
}

static void
test_encode(void)
{
	uint8_t		px[48 * 32 * 3];
	tl_image	img = {48, 32, px},
				back;
	uint8_t    *jpeg;
	size_t		len;
	tl_error	err;
	int			maxd = 0;

	for (int y = 0; y < 32; y++)
		for (int x = 0; x < 48; x++)
		{
			px[(y * 48 + x) * 3] = (uint8_t) (x * 5);
			px[(y * 48 + x) * 3 + 1] = (uint8_t) (y * 7);
			px[(y * 48 + x) * 3 + 2] = 128;
		}
	is_int(tl_image_encode_jpeg(&img, 90, &jpeg, &len, &err), TL_OK, "encode 48x32");
	ok(len > 100 && tl_image_sniff(jpeg, len) == TL_FMT_JPEG, "output is a JPEG of %zu bytes", len);
	if (is_int(tl_image_decode(jpeg, len, TL_DEFAULT_MAX_PIXELS, &back, &err), TL_OK, "it decodes"))
	{
		ok(back.width == 48 && back.height == 32, "same size");
		for (int i = 0; i < 48 * 32 * 3; i++)
		{
			int			d = abs(back.rgb[i] - px[i]);

			maxd = d > maxd ? d : maxd;
		}
		/* smooth gradients at quality 90 with 4:2:0 chroma */
		ok(maxd <= 12, "pixels within 12 levels after the round trip (max %d)", maxd);
		tl_image_free(&back);
	}
	free(jpeg);
	is_int(tl_image_encode_jpeg(&img, 0, &jpeg, &len, &err), TL_E_INVALID, "quality 0 refused");
	ok(jpeg == NULL, "nothing returned on failure");
}

int
main(void)
{
	test_grid();
	test_encode();
	return tap_done();
}
