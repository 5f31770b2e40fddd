/*
 * tl_zip.c - the zip container of PyTorch checkpoints, read from and written
 * to memory.
 *
 * Reading trusts the central directory only after checking it: every record
 * lies inside the buffer, every local header agrees with its central entry,
 * entries don't overlap, sizes are consistent and every CRC-32 matches.
 * torch.save writes stored (uncompressed) entries with data descriptors and
 * always adds zip64 end records; deflated entries (a checkpoint re-zipped by
 * another tool) are inflated with zlib into a buffer of the declared size.
 */
#include "tl_checkpoint_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIG_LOCAL		0x04034b50u
#define SIG_CENTRAL		0x02014b50u
#define SIG_EOCD		0x06054b50u
#define SIG_EOCD64		0x06064b50u
#define SIG_EOCD64_LOC	0x07064b50u

#define LOCAL_LEN		30
#define CENTRAL_LEN		46
#define EOCD_LEN		22
#define EOCD64_LEN		56
#define EOCD64_LOC_LEN	20

struct tl_zip
{
	const uint8_t *data;
	size_t		len;
	int			n;
	tl_zip_entry *entries;
};

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t) (p[0] | (p[1] << 8));
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static uint64_t
rd64(const uint8_t *p)
{
	return (uint64_t) rd32(p) | ((uint64_t) rd32(p + 4) << 32);
}

uint32_t
tl_crc32(const uint8_t *data, size_t len)
{
	uLong		crc = crc32(0L, Z_NULL, 0);

	/* zlib takes uInt lengths: feed large buffers in pieces */
	while (len > 0)
	{
		uInt		chunk = len > (1u << 30) ? (1u << 30) : (uInt) len;

		crc = crc32(crc, data, chunk);
		data += chunk;
		len -= chunk;
	}
	return (uint32_t) crc;
}

void
tl_zip_close(tl_zip *z)
{
	if (!z)
		return;
	for (int i = 0; i < z->n; i++)
		free(z->entries[i].name);
	free(z->entries);
	free(z);
}

/* Find the end of central directory record: the last signature whose comment ends the file. */
static tl_code
find_eocd(const uint8_t *data, size_t len, size_t *pos, tl_error *err)
{
	size_t		lowest;

	if (len < EOCD_LEN)
		return tl_fail(err, TL_E_CORRUPT, "zip: file of %zu bytes is too short", len);
	lowest = len > EOCD_LEN + 65535 ? len - EOCD_LEN - 65535 : 0;
	for (size_t p = len - EOCD_LEN + 1; p-- > lowest;)
	{
		if (rd32(data + p) == SIG_EOCD && p + EOCD_LEN + rd16(data + p + 20) == len)
		{
			*pos = p;
			return TL_OK;
		}
	}
	return tl_fail(err, TL_E_CORRUPT, "zip: end of central directory not found (truncated file?)");
}

/* The zip64 extended information extra field replaces saturated 32-bit values. */
static tl_code
read_zip64_extra(const uint8_t *extra, size_t extra_len, tl_zip_entry *e,
				 bool need_size, bool need_csize, bool need_offset, tl_error *err)
{
	size_t		p = 0;

	while (p + 4 <= extra_len)
	{
		uint16_t	id = rd16(extra + p),
					sz = rd16(extra + p + 2);
		size_t		q = p + 4;

		if (q + sz > extra_len)
			return tl_fail(err, TL_E_CORRUPT, "zip: extra field of \"%.200s\" overruns its record", e->name);
		if (id == 0x0001)
		{
			size_t		end = q + sz;

			if (need_size)
			{
				if (q + 8 > end)
					return tl_fail(err, TL_E_CORRUPT, "zip: short zip64 field in \"%.200s\"", e->name);
				e->size = rd64(extra + q);
				q += 8;
			}
			if (need_csize)
			{
				if (q + 8 > end)
					return tl_fail(err, TL_E_CORRUPT, "zip: short zip64 field in \"%.200s\"", e->name);
				e->comp_size = rd64(extra + q);
				q += 8;
			}
			if (need_offset)
			{
				if (q + 8 > end)
					return tl_fail(err, TL_E_CORRUPT, "zip: short zip64 field in \"%.200s\"", e->name);
				e->local_offset = rd64(extra + q);
			}
			return TL_OK;
		}
		p = q + sz;
	}
	if (need_size || need_csize || need_offset)
		return tl_fail(err, TL_E_CORRUPT, "zip: \"%.200s\" needs a zip64 extra field and has none", e->name);
	return TL_OK;
}

static int
cmp_offset(const void *a, const void *b)
{
	const tl_zip_entry *x = *(const tl_zip_entry *const *) a;
	const tl_zip_entry *y = *(const tl_zip_entry *const *) b;

	return x->local_offset < y->local_offset ? -1 : x->local_offset > y->local_offset;
}

tl_code
tl_zip_open(const uint8_t *data, size_t len, int max_entries, tl_zip **out, tl_error *err)
{
	size_t		eocd = 0;
	uint64_t	count,
				cd_size,
				cd_offset;
	size_t		cd_end_limit;
	tl_zip	   *z;
	tl_zip_entry **order = NULL;
	tl_code		rc;

	*out = NULL;
	if ((rc = find_eocd(data, len, &eocd, err)) != TL_OK)
		return rc;
	if (rd16(data + eocd + 4) != 0 || rd16(data + eocd + 6) != 0)
		return tl_fail(err, TL_E_UNSUPPORTED, "zip: multi-disk archives are not supported");
	count = rd16(data + eocd + 10);
	cd_size = rd32(data + eocd + 12);
	cd_offset = rd32(data + eocd + 16);
	if (rd16(data + eocd + 8) != count)
		return tl_fail(err, TL_E_CORRUPT, "zip: inconsistent entry counts");
	cd_end_limit = eocd;

	if (eocd >= EOCD64_LOC_LEN && rd32(data + eocd - EOCD64_LOC_LEN) == SIG_EOCD64_LOC)
	{
		const uint8_t *loc = data + eocd - EOCD64_LOC_LEN;
		uint64_t	e64 = rd64(loc + 8);
		const uint8_t *r;

		if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
			return tl_fail(err, TL_E_UNSUPPORTED, "zip: multi-disk archives are not supported");
		if (e64 > eocd - EOCD64_LOC_LEN || eocd - EOCD64_LOC_LEN - e64 < EOCD64_LEN)
			return tl_fail(err, TL_E_CORRUPT, "zip: zip64 end record offset is out of range");
		r = data + e64;
		if (rd32(r) != SIG_EOCD64)
			return tl_fail(err, TL_E_CORRUPT, "zip: zip64 end record signature is wrong");
		if (rd64(r + 24) != rd64(r + 32))
			return tl_fail(err, TL_E_CORRUPT, "zip: inconsistent zip64 entry counts");
		/* values saturated in the classic record come from the zip64 one; others must agree */
		if (count != 0xFFFF && count != rd64(r + 32))
			return tl_fail(err, TL_E_CORRUPT, "zip: zip64 and classic entry counts disagree");
		count = rd64(r + 32);
		cd_size = rd64(r + 40);
		cd_offset = rd64(r + 48);
		cd_end_limit = (size_t) e64;
	}
	if (count > (uint64_t) max_entries)
		return tl_fail(err, TL_E_LIMIT, "zip: %llu entries exceed the limit of %d",
					   (unsigned long long) count, max_entries);
	if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset)
		return tl_fail(err, TL_E_CORRUPT, "zip: central directory lies outside the file");
	if (count * CENTRAL_LEN > cd_size)
		return tl_fail(err, TL_E_CORRUPT, "zip: central directory is too small for %llu entries",
					   (unsigned long long) count);

	z = calloc(1, sizeof(*z));
	if (!z)
		return tl_fail(err, TL_E_NOMEM, "out of memory reading a zip");
	z->data = data;
	z->len = len;
	z->entries = calloc(count ? count : 1, sizeof(*z->entries));
	order = calloc(count ? count : 1, sizeof(*order));
	if (!z->entries || !order)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory reading a zip");
		goto fail;
	}

	{
		size_t		p = (size_t) cd_offset;
		size_t		cd_end = (size_t) (cd_offset + cd_size);

		for (uint64_t i = 0; i < count; i++)
		{
			tl_zip_entry *e = &z->entries[z->n];
			uint16_t	flags,
						name_len,
						extra_len,
						comment_len;
			uint32_t	csize32,
						size32,
						off32;

			if (cd_end - p < CENTRAL_LEN || rd32(data + p) != SIG_CENTRAL)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "zip: central directory entry %llu is damaged",
							 (unsigned long long) i);
				goto fail;
			}
			flags = rd16(data + p + 8);
			e->method = rd16(data + p + 10);
			e->crc = rd32(data + p + 16);
			csize32 = rd32(data + p + 20);
			size32 = rd32(data + p + 24);
			name_len = rd16(data + p + 28);
			extra_len = rd16(data + p + 30);
			comment_len = rd16(data + p + 32);
			off32 = rd32(data + p + 42);
			if (cd_end - p - CENTRAL_LEN < (size_t) name_len + extra_len + comment_len)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "zip: central directory entry %llu overruns the directory",
							 (unsigned long long) i);
				goto fail;
			}
			if (name_len == 0 || memchr(data + p + CENTRAL_LEN, 0, name_len) != NULL)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "zip: entry %llu has an empty or invalid name",
							 (unsigned long long) i);
				goto fail;
			}
			e->name = malloc((size_t) name_len + 1);
			if (!e->name)
			{
				rc = tl_fail(err, TL_E_NOMEM, "out of memory reading a zip");
				goto fail;
			}
			memcpy(e->name, data + p + CENTRAL_LEN, name_len);
			e->name[name_len] = '\0';
			z->n++;
			if (flags & 0x0041)
			{
				rc = tl_fail(err, TL_E_UNSUPPORTED, "zip: entry \"%.200s\" is encrypted", e->name);
				goto fail;
			}
			e->size = size32;
			e->comp_size = csize32;
			e->local_offset = off32;
			if ((rc = read_zip64_extra(data + p + CENTRAL_LEN + name_len, extra_len, e,
									   size32 == 0xFFFFFFFFu, csize32 == 0xFFFFFFFFu,
									   off32 == 0xFFFFFFFFu, err)) != TL_OK)
				goto fail;
			if (e->method != 0 && e->method != 8)
			{
				rc = tl_fail(err, TL_E_UNSUPPORTED, "zip: entry \"%.200s\" uses compression method %u",
							 e->name, e->method);
				goto fail;
			}
			if (e->method == 0 && e->comp_size != e->size)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "zip: stored entry \"%.200s\" has different sizes", e->name);
				goto fail;
			}
			for (int j = 0; j < z->n - 1; j++)
				if (strcmp(z->entries[j].name, e->name) == 0)
				{
					rc = tl_fail(err, TL_E_CORRUPT, "zip: duplicate entry \"%.200s\"", e->name);
					goto fail;
				}
			p += CENTRAL_LEN + name_len + extra_len + comment_len;
		}
	}

	/* Local headers: inside the file, consistent with the directory, data before the directory. */
	for (int i = 0; i < z->n; i++)
	{
		tl_zip_entry *e = &z->entries[i];
		const uint8_t *lh;
		uint16_t	lname,
					lextra;
		uint64_t	data_off;

		if (e->local_offset > cd_offset || cd_offset - e->local_offset < LOCAL_LEN)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "zip: local header of \"%.200s\" is out of range", e->name);
			goto fail;
		}
		lh = data + e->local_offset;
		lname = rd16(lh + 26);
		lextra = rd16(lh + 28);
		if (rd32(lh) != SIG_LOCAL || rd16(lh + 8) != e->method ||
			lname != strlen(e->name) ||
			cd_offset - e->local_offset - LOCAL_LEN < (uint64_t) lname + lextra ||
			memcmp(lh + LOCAL_LEN, e->name, lname) != 0)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "zip: local header of \"%.200s\" does not match the directory",
						 e->name);
			goto fail;
		}
		/* Without a data descriptor (flag bit 3) the local header repeats CRC and sizes. */
		if (!(rd16(lh + 6) & 0x0008) && e->size < 0xFFFFFFFFu && e->comp_size < 0xFFFFFFFFu &&
			(rd32(lh + 14) != e->crc || rd32(lh + 18) != e->comp_size || rd32(lh + 22) != e->size))
		{
			rc = tl_fail(err, TL_E_CORRUPT, "zip: local header of \"%.200s\" disagrees on CRC or sizes",
						 e->name);
			goto fail;
		}
		data_off = e->local_offset + LOCAL_LEN + lname + lextra;
		if (e->comp_size > cd_offset - data_off)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "zip: data of \"%.200s\" (%llu bytes) runs past the end",
						 e->name, (unsigned long long) e->comp_size);
			goto fail;
		}
		e->data_offset = data_off;
		order[i] = e;
	}
	qsort(order, (size_t) z->n, sizeof(*order), cmp_offset);
	for (int i = 1; i < z->n; i++)
		if (order[i]->local_offset < order[i - 1]->data_offset + order[i - 1]->comp_size)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "zip: entries \"%.200s\" and \"%.200s\" overlap",
						 order[i - 1]->name, order[i]->name);
			goto fail;
		}
	free(order);
	*out = z;
	return TL_OK;

fail:
	free(order);
	tl_zip_close(z);
	return rc;
}

int
tl_zip_count(const tl_zip *z)
{
	return z->n;
}

const tl_zip_entry *
tl_zip_entry_at(const tl_zip *z, int i)
{
	return (i >= 0 && i < z->n) ? &z->entries[i] : NULL;
}

const tl_zip_entry *
tl_zip_find(const tl_zip *z, const char *name)
{
	for (int i = 0; i < z->n; i++)
		if (strcmp(z->entries[i].name, name) == 0)
			return &z->entries[i];
	return NULL;
}

tl_code
tl_zip_read(const tl_zip *z, const tl_zip_entry *e, uint64_t max_size,
			const uint8_t **bytes, uint8_t **owned, tl_error *err)
{
	const uint8_t *src = z->data + e->data_offset;

	*bytes = NULL;
	*owned = NULL;
	if (e->size > max_size)
		return tl_fail(err, TL_E_LIMIT, "zip: entry \"%.200s\" of %llu bytes exceeds the limit of %llu",
					   e->name, (unsigned long long) e->size, (unsigned long long) max_size);
	if (e->method == 0)
	{
		if (tl_crc32(src, (size_t) e->size) != e->crc)
			return tl_fail(err, TL_E_CORRUPT, "zip: CRC-32 of \"%.200s\" does not match", e->name);
		*bytes = src;
		return TL_OK;
	}
	else
	{
		z_stream	zs;
		uint8_t    *buf = malloc(e->size ? (size_t) e->size : 1);
		int			zrc;
		uint64_t	in_left = e->comp_size,
					out_left = e->size;

		if (!buf)
			return tl_fail(err, TL_E_NOMEM, "out of memory inflating \"%.200s\"", e->name);
		memset(&zs, 0, sizeof(zs));
		if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
		{
			free(buf);
			return tl_fail(err, TL_E_NOMEM, "zip: can't initialise inflate");
		}
		zs.next_in = (Bytef *) src;
		zs.next_out = buf;
		do
		{
			uInt		in_chunk = in_left > (1u << 30) ? (1u << 30) : (uInt) in_left;
			uInt		out_chunk = out_left > (1u << 30) ? (1u << 30) : (uInt) out_left;

			zs.avail_in = in_chunk;
			zs.avail_out = out_chunk;
			zrc = inflate(&zs, Z_NO_FLUSH);
			in_left -= in_chunk - zs.avail_in;
			out_left -= out_chunk - zs.avail_out;
		} while (zrc == Z_OK && (zs.avail_in == 0 ? in_left > 0 : out_left > 0));
		inflateEnd(&zs);
		if (zrc != Z_STREAM_END || out_left != 0 || in_left != 0)
		{
			free(buf);
			return tl_fail(err, TL_E_CORRUPT, "zip: deflate data of \"%.200s\" is damaged or has the wrong size",
						   e->name);
		}
		if (tl_crc32(buf, (size_t) e->size) != e->crc)
		{
			free(buf);
			return tl_fail(err, TL_E_CORRUPT, "zip: CRC-32 of \"%.200s\" does not match", e->name);
		}
		*bytes = buf;
		*owned = buf;
		return TL_OK;
	}
}

/* ---------- writer ---------- */

static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t) v;
	p[1] = (uint8_t) (v >> 8);
}

static void
wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t) v);
	wr16(p + 2, (uint16_t) (v >> 16));
}

/* Data is aligned to 64 bytes (padding in an extra field), as torch.save does, so readers can map it. */
#define ALIGN 64
#define PAD_EXTRA_ID 0x4246		/* "FB", the id torch uses for its padding field */

tl_code
tl_zip_write(const tl_zip_out_entry *entries, int n, uint8_t **out, size_t *out_len, tl_error *err)
{
	size_t		total = 0,
				cd_size = 0;
	uint8_t    *buf,
			   *p;
	uint32_t   *offsets;

	*out = NULL;
	*out_len = 0;
	if (n > 0xFFFE)
		return tl_fail(err, TL_E_LIMIT, "zip: too many entries (%d)", n);
	for (int i = 0; i < n; i++)
	{
		size_t		nl = strlen(entries[i].name);

		if (nl == 0 || nl > 0xFFFF)
			return tl_fail(err, TL_E_INVALID, "zip: bad entry name");
		/* local header + name + padding field (4 + up to ALIGN-1, at least 4 bytes) + data */
		total += LOCAL_LEN + nl + 4 + ALIGN + entries[i].len;
		cd_size += CENTRAL_LEN + nl;
		if (total > 0xFFFFFFF0u - cd_size - EOCD_LEN)
			return tl_fail(err, TL_E_LIMIT, "zip: archive would exceed 4 GB (zip64 output is not written)");
	}
	total += cd_size + EOCD_LEN;
	buf = calloc(1, total);
	offsets = calloc(n ? (size_t) n : 1, sizeof(*offsets));
	if (!buf || !offsets)
	{
		free(buf);
		free(offsets);
		return tl_fail(err, TL_E_NOMEM, "out of memory writing a zip (%zu bytes)", total);
	}
	p = buf;
	for (int i = 0; i < n; i++)
	{
		const tl_zip_out_entry *e = &entries[i];
		size_t		nl = strlen(e->name);
		size_t		hdr_end = (size_t) (p - buf) + LOCAL_LEN + nl + 4;
		size_t		pad = (ALIGN - hdr_end % ALIGN) % ALIGN;
		uint32_t	crc = tl_crc32(e->data, e->len);

		offsets[i] = (uint32_t) (p - buf);
		wr32(p, SIG_LOCAL);
		wr16(p + 4, 20);		/* version needed: 2.0 */
		wr16(p + 6, 0x0800);	/* UTF-8 names */
		wr16(p + 8, 0);			/* stored */
		wr16(p + 10, 0);
		wr16(p + 12, 0x21);		/* 1980-01-01, fixed for reproducible output */
		wr32(p + 14, crc);
		wr32(p + 18, (uint32_t) e->len);
		wr32(p + 22, (uint32_t) e->len);
		wr16(p + 26, (uint16_t) nl);
		wr16(p + 28, (uint16_t) (4 + pad));
		memcpy(p + LOCAL_LEN, e->name, nl);
		p += LOCAL_LEN + nl;
		wr16(p, PAD_EXTRA_ID);
		wr16(p + 2, (uint16_t) pad);
		memset(p + 4, 'Z', pad);
		p += 4 + pad;
		if (e->len)
			memcpy(p, e->data, e->len);
		p += e->len;
	}
	{
		uint8_t    *cd = p;

		for (int i = 0; i < n; i++)
		{
			const tl_zip_out_entry *e = &entries[i];
			size_t		nl = strlen(e->name);
			const uint8_t *lh = buf + offsets[i];

			wr32(p, SIG_CENTRAL);
			wr16(p + 4, 20);	/* made by */
			wr16(p + 6, 20);	/* needed */
			wr16(p + 8, 0x0800);
			wr16(p + 10, 0);
			wr16(p + 12, 0);
			wr16(p + 14, 0x21);
			memcpy(p + 16, lh + 14, 12);	/* crc and sizes */
			wr16(p + 28, (uint16_t) nl);
			wr16(p + 30, 0);
			wr16(p + 32, 0);
			wr16(p + 34, 0);
			wr16(p + 36, 0);
			wr32(p + 38, 0);
			wr32(p + 42, offsets[i]);
			memcpy(p + CENTRAL_LEN, e->name, nl);
			p += CENTRAL_LEN + nl;
		}
		wr32(p, SIG_EOCD);
		wr16(p + 4, 0);
		wr16(p + 6, 0);
		wr16(p + 8, (uint16_t) n);
		wr16(p + 10, (uint16_t) n);
		wr32(p + 12, (uint32_t) (p - cd));
		wr32(p + 16, (uint32_t) (cd - buf));
		wr16(p + 20, 0);
		p += EOCD_LEN;
	}
	free(offsets);
	*out = buf;
	*out_len = (size_t) (p - buf);
	return TL_OK;
}
