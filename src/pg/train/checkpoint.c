/*
 * train/checkpoint.c - a run's resume point in tl_run_checkpoints and
 * tl_run_checkpoint_tensors: the epoch, best accuracy, generator state and
 * image ids, plus the current weights and buffers, the best epoch's weights
 * and the SGD momentum buffers as state dicts.
 *
 * Runs inside the worker's transactions with SPI connected.  Tensors are
 * stored as little-endian float32 bytes, like tl_model_tensors.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "pg_error.h"
#include "train.h"

static bytea *
floats_to_bytea(const float *data, int64 n)
{
	bytea	   *b = palloc(VARHDRSZ + n * sizeof(float));

	SET_VARSIZE(b, VARHDRSZ + n * sizeof(float));
#ifdef WORDS_BIGENDIAN
	for (int64 i = 0; i < n; i++)
	{
		uint32		v;

		memcpy(&v, &data[i], 4);
		v = pg_bswap32(v);
		memcpy(VARDATA(b) + 4 * i, &v, 4);
	}
#else
	memcpy(VARDATA(b), data, n * sizeof(float));
#endif
	return b;
}

static void
bytea_to_floats(const bytea *b, float *out, int64 n)
{
#ifdef WORDS_BIGENDIAN
	for (int64 i = 0; i < n; i++)
	{
		uint32		v;

		memcpy(&v, VARDATA_ANY(b) + 4 * i, 4);
		v = pg_bswap32(v);
		memcpy(&out[i], &v, 4);
	}
#else
	memcpy(out, VARDATA_ANY(b), n * sizeof(float));
#endif
}

static ArrayType *
int64_array(const int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

int64 *
array_int64(ArrayType *a, int *n)
{
	Datum	   *d;
	bool	   *nulls;
	int64	   *v;

	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &d, &nulls, n);
	v = palloc(sizeof(int64) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("a run's recorded image ids include a null")));
		v[i] = DatumGetInt64(d[i]);
	}
	return v;
}

static bytea *
rng_to_bytea(const tl_rng *rng)
{
	bytea	   *b = palloc(VARHDRSZ + 32);

	SET_VARSIZE(b, VARHDRSZ + 32);
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 8; k++)
			((uint8 *) VARDATA(b))[i * 8 + k] = (uint8) (rng->s[i] >> (8 * k));
	return b;
}

static void
exec_or_error(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "checkpoint query failed (%s): %s", SPI_result_code_string(rc), sql);
}

static void forget_saved(void);

void
tl_ckpt_begin(int64 run, const int64 *train_ids, int n_train, const int64 *val_ids, int n_val,
			  const tl_rng *rng)
{
	StringInfoData q;
	Oid			types[4] = {INT8OID, BYTEAOID, INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[4];

	forget_saved();
	initStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	values[0] = Int64GetDatum(run);
	exec_or_error(q.data, 1, types, values, NULL, SPI_OK_DELETE);

	resetStringInfo(&q);
	appendStringInfo(&q,
					 "INSERT INTO %s (run, epoch, best_acc, best_epoch, rng, train_ids, val_ids) "
					 "VALUES ($1, -1, 0, -1, $2, $3, $4)", tl_qualified("tl_run_checkpoints"));
	values[1] = PointerGetDatum(rng_to_bytea(rng));
	values[2] = PointerGetDatum(int64_array(train_ids, n_train));
	values[3] = PointerGetDatum(int64_array(val_ids, n_val));
	exec_or_error(q.data, 4, types, values, NULL, SPI_OK_INSERT);
}

/*
 * What this worker last wrote for each part of its run's checkpoint: a hash
 * of every tensor's key, shape and bytes, so that a save rewrites only the
 * tensors that changed.  A feature extractor's frozen convolutions (~45 MB
 * per part) are then written once per run instead of once per epoch.  Only
 * valid while the transactions that wrote those rows committed: any error
 * ends the worker, and tl_ckpt_begin forgets everything.
 */
#define CKPT_PARTS 3
static const char *const ckpt_part_names[CKPT_PARTS] = {"model", "best", "momentum"};

typedef struct saved_part
{
	int64		run;			/* 0: nothing known */
	int			n;
	uint64	   *hashes;			/* per position, in TopMemoryContext */
} saved_part;

static saved_part saved[CKPT_PARTS];

static saved_part *
saved_for(const char *part)
{
	for (int i = 0; i < CKPT_PARTS; i++)
		if (strcmp(ckpt_part_names[i], part) == 0)
			return &saved[i];
	elog(ERROR, "unknown checkpoint part \"%s\"", part);
	return NULL;				/* keep compiler quiet */
}

static void
forget_saved(void)
{
	for (int i = 0; i < CKPT_PARTS; i++)
	{
		if (saved[i].hashes)
			pfree(saved[i].hashes);
		memset(&saved[i], 0, sizeof(saved[i]));
	}
}

static uint64
tensor_hash(const tl_tensor *t)
{
	int64		numel = tl_tensor_numel(t);
	uint64		h = hash_bytes_extended((const unsigned char *) t->name, strlen(t->name), 0);

	h = hash_bytes_extended((const unsigned char *) t->shape, sizeof(int64_t) * t->ndim, h);
	/* hash_bytes_extended takes an int length: hash large tensors in slices */
	for (int64 off = 0; off < numel; off += INT64CONST(1) << 28)
		h = hash_bytes_extended((const unsigned char *) (t->data + off),
								(int) (sizeof(float) * Min(numel - off, INT64CONST(1) << 28)), h);
	return h;
}

static void
save_part(int64 run, const char *part, const tl_state_dict *sd)
{
	StringInfoData q;
	Oid			types[6] = {INT8OID, TEXTOID, TEXTOID, INT8ARRAYOID, BYTEAOID, INT4OID};
	Datum		values[6];
	SPIPlanPtr	plan;
	saved_part *known = saved_for(part);
	bool		have = known->run == run && known->n == sd->n;
	uint64	   *hashes = MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * Max(sd->n, 1));

	initStringInfo(&q);
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(part);
	if (!have)
	{
		/* unknown rows (first save, or a resumed run): replace the part */
		appendStringInfo(&q, "DELETE FROM %s WHERE run = $1 AND part = $2",
						 tl_qualified("tl_run_checkpoint_tensors"));
		exec_or_error(q.data, 2, types, values, NULL, SPI_OK_DELETE);
		resetStringInfo(&q);
	}

	/* the same keys in the same positions as before: update changed rows in place */
	appendStringInfo(&q, "INSERT INTO %s (run, part, key, shape, data, position) VALUES ($1, $2, $3, $4, $5, $6) "
					 "ON CONFLICT (run, part, key) DO UPDATE SET shape = excluded.shape, "
					 "data = excluded.data, position = excluded.position",
					 tl_qualified("tl_run_checkpoint_tensors"));
	plan = SPI_prepare(q.data, 6, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare checkpoint insert");
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int64		numel = tl_tensor_numel(t);
		bytea	   *data;
		ArrayType  *shape;
		int			rc;

		hashes[i] = tensor_hash(t);
		if (have && known->hashes[i] == hashes[i])
			continue;
		data = floats_to_bytea(t->data, numel);
		shape = int64_array(t->shape, t->ndim);

		values[2] = CStringGetTextDatum(t->name);
		values[3] = PointerGetDatum(shape);
		values[4] = PointerGetDatum(data);
		values[5] = Int32GetDatum(i);
		rc = SPI_execute_plan(plan, values, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not save checkpoint tensor \"%s\"", t->name);
		pfree(data);
		pfree(shape);
	}
	SPI_freeplan(plan);
	if (known->hashes)
		pfree(known->hashes);
	known->run = run;
	known->n = sd->n;
	known->hashes = hashes;
}

void
tl_ckpt_save(int64 run, int epoch, double best_acc, int best_epoch, const tl_rng *rng,
			 const tl_state_dict *model, const tl_state_dict *momentum, const tl_state_dict *best)
{
	StringInfoData q;
	Oid			types[5] = {INT8OID, INT4OID, FLOAT8OID, INT4OID, BYTEAOID};
	Datum		values[5];

	initStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET epoch = $2, best_acc = $3, best_epoch = $4, rng = $5, saved = now() "
					 "WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	values[0] = Int64GetDatum(run);
	values[1] = Int32GetDatum(epoch);
	values[2] = Float8GetDatum(best_acc);
	values[3] = Int32GetDatum(best_epoch);
	values[4] = PointerGetDatum(rng_to_bytea(rng));
	exec_or_error(q.data, 5, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_processed != 1)
		elog(ERROR, "checkpoint of run " INT64_FORMAT " is missing", run);
	save_part(run, "model", model);
	tl_debug_pause("checkpoint");
	save_part(run, "momentum", momentum);
	if (best)
		save_part(run, "best", best);
}

bool
tl_ckpt_load_meta(int64 run, tl_ckpt *c)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	bytea	   *rng;
	MemoryContext caller = CurrentMemoryContext;

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT epoch, best_acc, best_epoch, rng, train_ids, val_ids FROM %s WHERE run = $1",
					 tl_qualified("tl_run_checkpoints"));
	exec_or_error(q.data, 1, types, values, NULL, SPI_OK_SELECT);

	/*
	 * SPI_execute returns in the SPI procedure's context, which SPI_finish
	 * deletes at the end of the transaction: the id arrays are the caller's,
	 * so allocate them in the caller's context (they outlive the
	 * transaction when a run resumes).
	 */
	MemoryContextSwitchTo(caller);
	if (SPI_processed != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c->epoch = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	c->best_acc = DatumGetFloat8(SPI_getbinval(tup, desc, 2, &isnull));
	c->best_epoch = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	rng = DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull));
	if (VARSIZE_ANY_EXHDR(rng) != 32)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("checkpoint of run " INT64_FORMAT " has a malformed generator state", run)));
	for (int i = 0; i < 4; i++)
	{
		c->rng.s[i] = 0;
		for (int k = 0; k < 8; k++)
			c->rng.s[i] |= (uint64) ((const uint8 *) VARDATA_ANY(rng))[i * 8 + k] << (8 * k);
	}
	c->train_ids = array_int64(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull)), &c->n_train);
	c->val_ids = array_int64(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull)), &c->n_val);
	return true;
}

tl_state_dict *
tl_ckpt_load_part(int64 run, const char *part)
{
	StringInfoData q;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(run), CStringGetTextDatum(part)};
	tl_state_dict *sd;
	tl_error	err;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT key, shape, data FROM %s WHERE run = $1 AND part = $2 ORDER BY position",
					 tl_qualified("tl_run_checkpoint_tensors"));
	exec_or_error(q.data, 2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("checkpoint of run " INT64_FORMAT " has no \"%s\" tensors", run, part)));
	sd = tl_sd_new(&err);
	if (sd == NULL)
		tl_pg_raise(&err, "loading a checkpoint");
	PG_TRY();
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *key = SPI_getvalue(tup, desc, 1);
			int			ndim;
			int64	   *shape = array_int64(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull)), &ndim);
			bytea	   *data = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
			int64		numel = tl_shape_numel(ndim, shape, INT64_C(1) << 32);
			float	   *buf;

			if (ndim > TL_MAX_DIMS || numel < 0 ||
				(int64) VARSIZE_ANY_EXHDR(data) != numel * (int64) sizeof(float))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("checkpoint tensor \"%s\" of run " INT64_FORMAT " has a size that does not match its shape",
								key, run)));
			buf = malloc(Max(numel, 1) * sizeof(float));
			if (buf == NULL)
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			bytea_to_floats(data, buf, numel);
			if (tl_sd_add_owned(sd, key, ndim, shape, buf, &err) != TL_OK)
				tl_pg_raise(&err, "loading a checkpoint");
		}
	}
	PG_CATCH();
	{
		tl_sd_free(sd);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return sd;
}
