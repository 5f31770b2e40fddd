/*
 * model_cache.c - per-backend cache of models ready for prediction.
 *
 * See model_cache.h for the validity rule.  The lookups run through SPI plans
 * prepared once per process, with schema-qualified tables and operators: the
 * plan cache re-parses a plan whenever the caller's search_path differs from
 * the one it was parsed under, so qualification is what keeps a hostile
 * search_path from redirecting them.  They run read-only in the caller's
 * snapshot, as the caller (so
 * table privileges and row-level security apply), and write nothing, which
 * keeps prediction usable in parallel workers and on a hot standby.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "model_cache.h"
#include "model_file.h"
#include "image/tl_image.h"
#include "model_store.h"
#include "pg_error.h"
#include "predict_threads.h"
#include "transfer_pg.h"

/*
 * Which stored models count as trained (for the default model before any
 * deployment): those whose source records a training run.
 */
#define TL_TRAINED_MODEL_CONDITION \
	"(m.source OPERATOR(pg_catalog.->>) 'kind') OPERATOR(pg_catalog.=) 'trained'"

/*
 * The version of model m's tensors: the XOR of a 64-bit hash of each of its
 * tl_model_tensors rows' versions (ctid seeded with xmin; ctids are unique,
 * so no two rows cancel); about 30 us for a ResNet-18's ~100 rows.  Any
 * INSERT, UPDATE or DELETE of them (or a TRUNCATE) changes it.  Reading the
 * table here, on every call, also makes every call, cache hits included,
 * check that the current user may read the weights (SET ROLE, SECURITY
 * DEFINER callers) and apply row-level security, as a fresh load would.
 * %s: the schema.
 */
#define TL_TENSORS_VERSION \
	"(SELECT pg_catalog.bit_xor(pg_catalog.hashtidextended(t.ctid, " \
	"t.xmin::pg_catalog.text::pg_catalog.int8)) " \
	"FROM %s.tl_model_tensors t WHERE t.model_id OPERATOR(pg_catalog.=) m.id)"

/* Largest model image size accepted (the input buffer is size^2 * 3 floats). */
#define TL_MAX_MODEL_IMAGE_SIZE 1024

/* The cache: a small array, searched linearly (it holds a handful of models). */
#define TL_MODEL_CACHE_MAX 64
static tl_cached_model *cache[TL_MODEL_CACHE_MAX];
static int	cache_len = 0;
static uint64 lru_clock = 0;
static bool xact_callback_registered = false;

/* Plans of the per-call identity lookups, prepared once per process. */
static Oid	plans_schema = InvalidOid;
static SPIPlanPtr plan_by_name = NULL;
static SPIPlanPtr plan_deployed = NULL;
static SPIPlanPtr plan_newest_trained = NULL;

/* A model row version, as the lookups return it. */
typedef struct model_identity
{
	int64		id;
	TransactionId xmin;
	ItemPointerData ctid;
	int64		tensors_version;
} model_identity;

/*
 * A call site's memo of its last lookup (model_cache.h).  The lookups are
 * read-only SPI queries in the active snapshot, as the current user: with
 * the same snapshot, user and model argument they return the same row
 * versions, so the memo's identity stands in for them.
 */
struct tl_model_memo
{
	MemoryContext cxt;			/* owns model, xip and subxip */
	bool		valid;
	TimestampTz statement;		/* the statement's start: one statement at most */
	Oid			user;
	char	   *model;			/* NULL: the default model */
	/* the snapshot's visibility: every field HeapTupleSatisfiesMVCC reads */
	TransactionId xmin;
	TransactionId xmax;
	CommandId	curcid;
	uint32		xcnt;
	int32		subxcnt;
	bool		suboverflowed;
	bool		recovery;
	TransactionId *xip;
	TransactionId *subxip;
	model_identity ident;
};

static void
free_entry(tl_cached_model *m)
{
	if (m == NULL)
		return;
	if (m->classes)
	{
		for (int i = 0; i < m->num_classes; i++)
			free(m->classes[i]);
		free(m->classes);
	}
	free(m->name);
	tl_resnet_free(m->net);
	free(m->input);
	free(m->probs);
	free(m);
}

static void
remove_at(int i)
{
	free_entry(cache[i]);
	memmove(&cache[i], &cache[i + 1], (cache_len - i - 1) * sizeof(cache[0]));
	cache_len--;
}

void
tl_model_cache_trim(int keep)
{
	while (cache_len > keep)
	{
		int			victim = -1;

		for (int i = 0; i < cache_len; i++)
			if (cache[i]->pins == 0 &&
				(victim < 0 || cache[i]->last_used < cache[victim]->last_used))
				victim = i;
		if (victim < 0)
			break;				/* everything pinned: over the bound until xact end */
		remove_at(victim);
	}
}

/* Pins only protect an entry within a transaction; an error can skip unpin. */
static void
cache_xact_callback(XactEvent event, void *arg)
{
	for (int i = 0; i < cache_len; i++)
		cache[i]->pins = 0;
}

void
tl_model_cache_pin(tl_cached_model *m)
{
	m->pins++;
}

void
tl_model_cache_unpin(tl_cached_model *m)
{
	if (m->pins > 0)
		m->pins--;
}

int
tl_model_cache_entries(tl_cached_model **out, int max)
{
	int			n = 0;

	for (int i = 0; i < cache_len && n < max; i++)
		out[n++] = cache[i];
	/* most recently used first: insertion sort on a handful of entries */
	for (int i = 1; i < n; i++)
	{
		tl_cached_model *m = out[i];
		int			j = i - 1;

		while (j >= 0 && out[j]->last_used < m->last_used)
		{
			out[j + 1] = out[j];
			j--;
		}
		out[j + 1] = m;
	}
	return n;
}

static SPIPlanPtr
prepare_saved(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

static void
prepare_plans(Oid schema)
{
	char	   *nsp;
	StringInfoData sql;
	Oid			text_arg[1] = {TEXTOID};

	if (plans_schema == schema && plan_by_name != NULL)
		return;
	if (plan_by_name)
		SPI_freeplan(plan_by_name);
	if (plan_deployed)
		SPI_freeplan(plan_deployed);
	if (plan_newest_trained)
		SPI_freeplan(plan_newest_trained);
	plan_by_name = plan_deployed = plan_newest_trained = NULL;
	plans_schema = InvalidOid;

	nsp = get_namespace_name(schema);
	if (nsp == NULL)
		elog(ERROR, "cache lookup failed for namespace %u", schema);
	nsp = (char *) quote_identifier(nsp);

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT m.id, m.xmin, m.ctid, m.name, " TL_TENSORS_VERSION
					 " FROM %s.tl_stored_models m "
					 "WHERE m.name OPERATOR(pg_catalog.=) $1", nsp, nsp);
	plan_by_name = prepare_saved(sql.data, 1, text_arg);

	/* The newest deployment; its model is NULL once the model was deleted. */
	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT m.id, m.xmin, m.ctid, d.model_name, " TL_TENSORS_VERSION
					 " FROM %s.tl_deployments d "
					 "LEFT JOIN %s.tl_stored_models m ON m.id OPERATOR(pg_catalog.=) d.model_id "
					 "ORDER BY d.id DESC LIMIT 1", nsp, nsp, nsp);
	plan_deployed = prepare_saved(sql.data, 0, NULL);

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT m.id, m.xmin, m.ctid, m.name, " TL_TENSORS_VERSION
					 " FROM %s.tl_stored_models m "
					 "WHERE " TL_TRAINED_MODEL_CONDITION " "
					 "ORDER BY m.created_at DESC, m.id DESC LIMIT 1", nsp, nsp);
	plan_newest_trained = prepare_saved(sql.data, 0, NULL);

	pfree(sql.data);
	plans_schema = schema;
}

/*
 * Run one identity lookup.  Returns false if it found no row; *name gets the
 * row's name column when wanted.  *model_missing is set when the row exists
 * but names no model (a deployment whose model was deleted).
 */
static bool
lookup_identity(SPIPlanPtr plan, Datum *args, model_identity *ident,
				char **name, bool *model_missing)
{
	int			rc;
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	rc = SPI_execute_plan(plan, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "model lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	/* palloc'd in SPI's procedure context: gone at SPI_finish */
	if (name)
		*name = SPI_getvalue(tup, desc, 4);
	ident->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	*model_missing = isnull;
	if (isnull)
		return true;
	ident->xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 2, &isnull));
	ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 3, &isnull)),
					&ident->ctid);
	ident->tensors_version = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	if (isnull)
		ident->tensors_version = 0;	/* no tensors: the load will say so */
	return true;
}

/* Resolve `model` (NULL: the default model) to its current row version. */
static void
resolve_model(const char *model, model_identity *ident)
{
	bool		missing = false;
	char	   *name = NULL;

	if (model != NULL)
	{
		Datum		arg = CStringGetTextDatum(model);

		if (!lookup_identity(plan_by_name, &arg, ident, NULL, &missing))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("model \"%s\" does not exist", model),
					 errhint(TL_HINT_SEE_MODELS)));
		return;
	}

	if (lookup_identity(plan_deployed, NULL, ident, &name, &missing))
	{
		if (missing)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("deployed model \"%s\" does not exist any more", name),
					 errhint("Deploy another model with tl_deploy(model), or name the model: tl_predict(img, model).")));
		return;
	}
	if (lookup_identity(plan_newest_trained, NULL, ident, &name, &missing))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("no model is deployed and no trained model exists"),
			 errhint("Train one with tl_train(), deploy one with tl_deploy(model), or name the model: tl_predict(img, model).")));
}

/*
 * Build an entry for the row version ident.  The weights and the model's
 * metadata are read in the caller's snapshot, so they match ident; the
 * metadata's strings go to a child memory context deleted at the end.  The
 * entry's own objects are malloc'd, and every failure after the first
 * malloc frees the partial entry before raising.
 */
static tl_cached_model *
load_model(const model_identity *ident)
{
	MemoryContext loadcxt;
	MemoryContext oldcxt;
	tl_resnet  *net;
	TlModelInfo info;
	tl_error	err;
	tl_cached_model *m;
	tl_model_file_key fkey;
	bool		from_file;

	loadcxt = AllocSetContextCreate(CurrentMemoryContext, "transfer model load",
									ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(loadcxt);
	tl_predict_use_threads();	/* a new network's memory is faulted in on them */
	fkey.database = MyDatabaseId;
	fkey.id = ident->id;
	fkey.xmin = ident->xmin;
	fkey.ctid = ident->ctid;
	fkey.tensors_version = ident->tensors_version;
	fkey.algo = tl_get_conv_algorithm();
	/* another process may have built it already (model_file.c) */
	net = tl_model_file_open(&fkey);
	if (net != NULL)
	{
		const tl_resnet_config *cfg = tl_resnet_get_config(net);

		PG_TRY();
		{
			tl_store_info(ident->id, &info);
		}
		PG_CATCH();
		{
			tl_resnet_free(net);
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (cfg->num_classes != info.num_classes || cfg->base_width != info.base_width)
		{
			tl_resnet_free(net);
			net = NULL;
		}
	}
	from_file = net != NULL;
	if (net == NULL)
		net = tl_store_load_network(ident->id, &info);	/* checked like tl_store_load */
	MemoryContextSwitchTo(oldcxt);

	m = calloc(1, sizeof(tl_cached_model));
	if (m == NULL)
	{
		tl_resnet_free(net);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory loading a model")));
	}
	m->net = net;
	if (info.image_size < 1 || info.image_size > TL_MAX_MODEL_IMAGE_SIZE)
	{
		free_entry(m);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model \"%s\" has image size %d, outside 1..%d",
						info.name, info.image_size, TL_MAX_MODEL_IMAGE_SIZE)));
	}
	m->id = ident->id;
	m->xmin = ident->xmin;
	m->ctid = ident->ctid;
	m->tensors_version = ident->tensors_version;
	m->image_size = info.image_size;
	m->resize = tl_eval_resize_for(info.image_size);
	m->num_classes = info.num_classes;	/* fc's outputs: the load checked them */

	/*
	 * The plan mode with the fewest gradient buffers (only fc's): the engine
	 * has no inference-only plan; eval forwards never touch the gradients.
	 */
	tl_error_clear(&err);
	if (tl_resnet_plan(m->net, 1, info.image_size, info.image_size,
					   TL_MODE_FEATURE_EXTRACTOR, &err) != TL_OK)
	{
		free_entry(m);
		tl_pg_raise(&err, psprintf("loading model \"%s\"", info.name));
	}
	m->input = malloc((size_t) info.image_size * info.image_size * 3 * sizeof(float));
	m->probs = malloc((size_t) info.num_classes * sizeof(float));
	m->name = strdup(info.name);
	m->classes = calloc(info.num_classes, sizeof(char *));
	for (int i = 0; m->classes != NULL && i < info.num_classes; i++)
		if ((m->classes[i] = strdup(info.classes[i])) == NULL)
			break;
	if (m->input == NULL || m->probs == NULL || m->name == NULL || m->classes == NULL ||
		m->classes[info.num_classes - 1] == NULL)
	{
		free_entry(m);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory loading a model")));
	}
	/* for later processes (the second to build this version writes the file) */
	if (!from_file)
	{
		PG_TRY();
		{
			tl_model_file_save(&fkey, m->net);
		}
		PG_CATCH();
		{
			free_entry(m);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	m->bytes = sizeof(*m) + tl_resnet_planned_bytes(m->net) +
		(size_t) info.image_size * info.image_size * 3 * sizeof(float) +
		(size_t) info.num_classes * sizeof(float);
	m->loaded_at = GetCurrentTimestamp();
	MemoryContextDelete(loadcxt);
	return m;
}

tl_model_memo *
tl_model_memo_create(MemoryContext cxt)
{
	tl_model_memo *memo = MemoryContextAllocZero(cxt, sizeof(tl_model_memo));

	memo->cxt = cxt;
	return memo;
}

static bool
memo_matches(const tl_model_memo *memo, const char *model, Snapshot snap)
{
	if (!memo->valid || memo->user != GetUserId() ||
		memo->statement != GetCurrentStatementStartTimestamp())
		return false;
	if ((model == NULL) != (memo->model == NULL) ||
		(model != NULL && strcmp(model, memo->model) != 0))
		return false;
	return snap->xmin == memo->xmin && snap->xmax == memo->xmax &&
		snap->curcid == memo->curcid && snap->xcnt == memo->xcnt &&
		snap->subxcnt == memo->subxcnt && snap->suboverflowed == memo->suboverflowed &&
		snap->takenDuringRecovery == memo->recovery &&
		(snap->xcnt == 0 ||
		 memcmp(snap->xip, memo->xip, sizeof(TransactionId) * snap->xcnt) == 0) &&
		(snap->subxcnt <= 0 ||
		 memcmp(snap->subxip, memo->subxip, sizeof(TransactionId) * snap->subxcnt) == 0);
}

static TransactionId *
memo_copy_xids(tl_model_memo *memo, TransactionId *old, const TransactionId *xids, int n)
{
	TransactionId *copy;

	if (old)
		pfree(old);
	if (n <= 0)
		return NULL;
	copy = MemoryContextAlloc(memo->cxt, sizeof(TransactionId) * n);
	memcpy(copy, xids, sizeof(TransactionId) * n);
	return copy;
}

static void
memo_store(tl_model_memo *memo, const char *model, Snapshot snap, const model_identity *ident)
{
	memo->valid = false;		/* until complete: an allocation may fail */
	if (memo->model)
		pfree(memo->model);
	memo->model = model ? MemoryContextStrdup(memo->cxt, model) : NULL;
	memo->xip = memo_copy_xids(memo, memo->xip, snap->xip, snap->xcnt);
	memo->subxip = memo_copy_xids(memo, memo->subxip, snap->subxip, snap->subxcnt);
	memo->user = GetUserId();
	memo->statement = GetCurrentStatementStartTimestamp();
	memo->xmin = snap->xmin;
	memo->xmax = snap->xmax;
	memo->curcid = snap->curcid;
	memo->xcnt = snap->xcnt;
	memo->subxcnt = snap->subxcnt;
	memo->suboverflowed = snap->suboverflowed;
	memo->recovery = snap->takenDuringRecovery;
	memo->ident = *ident;
	memo->valid = true;
}

/* The cached entry built from row version ident, or NULL. */
static tl_cached_model *
find_entry(const model_identity *ident)
{
	for (int i = 0; i < cache_len; i++)
	{
		tl_cached_model *c = cache[i];

		if (c->id == ident->id && c->xmin == ident->xmin &&
			ItemPointerEquals(&c->ctid, (ItemPointer) &ident->ctid) &&
			c->tensors_version == ident->tensors_version)
			return c;
	}
	return NULL;
}

tl_cached_model *
tl_model_cache_get(const char *model, Oid schema)
{
	return tl_model_cache_get_memo(model, schema, NULL);
}

tl_cached_model *
tl_model_cache_get_memo(const char *model, Oid schema, tl_model_memo *memo)
{
	model_identity ident;
	tl_cached_model *m = NULL;
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;
	int			rc;

	if (snap == NULL || snap->snapshot_type != SNAPSHOT_MVCC)
		memo = NULL;
	if (memo && memo_matches(memo, model, snap) &&
		(m = find_entry(&memo->ident)) != NULL &&
		cache_len <= tl_guc_model_cache_size)
	{
		m->last_used = ++lru_clock;
		m->hits++;
		return m;
	}
	m = NULL;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(cache_xact_callback, NULL);
		xact_callback_registered = true;
	}

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	prepare_plans(schema);
	resolve_model(model, &ident);

	m = find_entry(&ident);
	if (m == NULL)
	{
		/* An older version of the same model is dead: free it first. */
		for (int i = cache_len - 1; i >= 0; i--)
			if (cache[i]->id == ident.id && cache[i]->pins == 0)
				remove_at(i);
		/* Make room before loading, so peak memory stays within the bound. */
		tl_model_cache_trim(Min(tl_guc_model_cache_size, TL_MODEL_CACHE_MAX) - 1);
		if (cache_len >= TL_MODEL_CACHE_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many models in use at once in this session")));
		m = load_model(&ident);
		cache[cache_len++] = m;
	}
	else if (cache_len > tl_guc_model_cache_size)
	{
		/* The setting shrank: trim, keeping the entry we are about to use. */
		m->last_used = ++lru_clock;
		tl_model_cache_trim(tl_guc_model_cache_size);
	}

	m->last_used = ++lru_clock;
	m->hits++;
	SPI_finish();
	if (memo)
		memo_store(memo, model, snap, &ident);
	return m;
}
