/*
 * train/data.c - what a run is made of: the dataset checks tl_train does
 * before it starts a worker (and the worker repeats in its own snapshot),
 * the memory estimate, and the run's arguments as stored in tl_runs.args.
 *
 * Every function here runs inside a transaction with SPI connected.
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "utils/fmgroids.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"

#include "pg_error.h"
#include "image/tl_image.h"
#include "train.h"
#include "transfer_pg.h"

const char *
tl_train_mode_name(tl_train_mode mode)
{
	return mode == TL_MODE_FEATURE_EXTRACTOR ? "feature_extractor" : "finetune";
}

/* pg_extension.extnamespace of this extension (get_extension_schema is not exported in 15). */
static Oid
extension_schema(void)
{
	Oid			ext = get_extension_oid("transfer", false);
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			schema = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		schema = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return schema;
}

const char *
tl_qualified(const char *name)
{
	char	   *schema = get_namespace_name(extension_schema());

	if (schema == NULL)
		elog(ERROR, "schema of extension \"transfer\" not found");
	return quote_qualified_identifier(schema, name);
}

static int
cmp_label(const void *a, const void *b)
{
	/* strcmp on UTF-8 bytes is code-point order: Python's sorted() on str */
	return strcmp(*(char *const *) a, *(char *const *) b);
}

int
tl_dataset_class_index(const tl_dataset_info *info, const char *label)
{
	int			lo = 0,
				hi = info->num_classes - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = strcmp(info->classes[mid], label);

		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

void
tl_dataset_check(const char *dataset, tl_dataset_info *info)
{
	StringInfoData q;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char	  **train = NULL;
	char	  **val = NULL;
	int			n_train_labels = 0,
				n_val_labels = 0;
	int64		total = 0;
	StringInfoData missing;
	int			n_missing = 0;

	memset(info, 0, sizeof(*info));
	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT split, label, count(*) FROM %s WHERE dataset = $1 "
					 "GROUP BY split, label",
					 tl_qualified("tl_images"));
	values[0] = CStringGetTextDatum(dataset);
	if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read dataset \"%s\"", dataset);

	train = palloc0(sizeof(char *) * (SPI_processed + 1));
	val = palloc0(sizeof(char *) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *split = SPI_getvalue(tup, desc, 1);
		char	   *label = SPI_getvalue(tup, desc, 2);
		int64		n = DatumGetInt64(SPI_getbinval(tup, desc, 3, &(bool) {false}));

		total += n;
		if (split == NULL || (strcmp(split, "train") != 0 && strcmp(split, "val") != 0))
			continue;
		if (label == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dataset \"%s\" has images without a label in split \"%s\"",
							dataset, split)));
		if (split[0] == 't')
		{
			train[n_train_labels++] = label;
			info->n_train += n;
		}
		else
		{
			val[n_val_labels++] = label;
			info->n_val += n;
		}
	}

	if (total == 0)
		tl_pg_raise_no_dataset(dataset, NULL);
	if (info->n_train == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset \"%s\" has no images in split \"train\"", dataset),
				 errhint("Training needs a train and a val split, like the tutorial's hymenoptera_data/train and hymenoptera_data/val; the view tl_datasets lists the splits.")));
	if (info->n_val == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset \"%s\" has no images in split \"val\"", dataset),
				 errhint("Training needs a train and a val split, like the tutorial's hymenoptera_data/train and hymenoptera_data/val.")));
	if (n_train_labels < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset \"%s\" has only %d class in split \"train\"", dataset, n_train_labels),
				 errhint("A classifier needs at least two classes.")));

	qsort(train, n_train_labels, sizeof(char *), cmp_label);
	info->num_classes = n_train_labels;
	info->classes = train;

	qsort(val, n_val_labels, sizeof(char *), cmp_label);
	initStringInfo(&missing);
	for (int i = 0; i < n_val_labels; i++)
	{
		if (tl_dataset_class_index(info, val[i]) >= 0)
			continue;
		if (n_missing < 5)
			appendStringInfo(&missing, "%s\"%s\"", n_missing ? ", " : "", val[i]);
		n_missing++;
	}
	if (n_missing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset \"%s\" has %d class%s in split \"val\" that split \"train\" lacks",
						dataset, n_missing, n_missing == 1 ? "" : "es"),
				 errdetail("Missing from train: %s%s.", missing.data, n_missing > 5 ? ", ..." : ""),
				 errhint("Add train images of these classes, or move or delete their val images (the view tl_datasets lists the classes of each split).")));
}

/* Parameter count of torchvision's ResNet-18 with a base width and fc size. */
static double
resnet18_params(int width, int num_classes)
{
	double		p = 3.0 * width * 49 + 4.0 * width;	/* conv1, bn1 (with running stats) */
	int			in = width;

	for (int stage = 0; stage < 4; stage++)
	{
		int			out = width << stage;

		for (int block = 0; block < 2; block++)
		{
			int			bin = block == 0 ? in : out;

			p += (double) bin * out * 9 + 4.0 * out;
			p += (double) out * out * 9 + 4.0 * out;
			if (block == 0 && bin != out)
				p += (double) bin * out + 4.0 * out;
		}
		in = out;
	}
	return p + 8.0 * width * num_classes + num_classes;
}

/*
 * A deliberately generous estimate: the images' compressed bytes (kept for
 * the whole run; a batch decodes its images, one per compute thread at a
 * time, twice for the transform's resized copy), the val images' crops or
 * cached features, seven
 * copies of the parameters (below) and, per image of a batch, the
 * activations a training step keeps plus their gradients and the largest
 * im2col workspace.
 */
double
tl_train_memory_estimate(const tl_run_args *args, const tl_data_size *size)
{
	double		s2 = (double) args->image_size * args->image_size;
	double		params = resnet18_params(args->base_width, args->num_classes);
	/* feature maps per image: ~2.4 * width * S^2 floats, twice for gradients */
	double		acts = 2.0 * 2.4 * args->base_width * s2;
	double		workspace = Max(147.0 * s2 / 4.0, 9.0 * args->base_width * s2 / 16.0);
	double		per_image = 4.0 * (acts + workspace + 3.0 * s2);

	double		images = 0;

	if (size)
	{
		/* per image: its tl_blob, id, label and allocation header */
		images = size->bytes + 64.0 * size->n;
		images += 2.0 * Max(args->threads, 1) * size->max_decoded;
		if (args->cache_features)
			images += 4.0 * 8 * args->base_width * size->n;
		else
			images += Min(3.0 * s2 * size->n, TL_VAL_CROPS_BYTES);	/* val crops */
	}
	/*
	 * params, gradients, momentum, best weights, a checkpoint copy,
	 * im2col-packed and Winograd (16/9) conv weights
	 */
	return images + 4.0 * 7.0 * params + per_image * args->batch_size + 64.0 * 1024 * 1024;
}

/*
 * The limit a run's worker holds its data to.  A superuser may have set
 * transfer.train_memory_limit in the session that called tl_train, which
 * this process does not see: its value is recorded in the run and applies
 * when the run's role is a superuser.  Anyone else cannot set it, so the
 * value of its role and database, which this process has too, applies.
 */
double
tl_train_memory_limit_bytes(const tl_run_args *args)
{
	int			mb = tl_guc_train_memory_limit;

	if (args->memory_limit >= 0 && superuser())
		mb = args->memory_limit;
	return (double) mb * 1024.0 * 1024.0;
}

char *
tl_run_args_json(const tl_run_args *args, const tl_dataset_info *classes)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s, "{\"epochs\": %d, \"batch_size\": %d, \"lr\": %.17g, "
					 "\"momentum\": %.17g, \"step_size\": %d, \"gamma\": %.17g, "
					 "\"from_scratch\": %s, \"base_model\": ",
					 args->epochs, args->batch_size, args->lr, args->momentum,
					 args->step_size, args->gamma, args->from_scratch ? "true" : "false");
	if (args->base_model)
		escape_json(&s, args->base_model);
	else
		appendStringInfoString(&s, "null");
	if (args->base_model_id)
		appendStringInfo(&s, ", \"base_model_id\": " INT64_FORMAT, args->base_model_id);
	else
		appendStringInfoString(&s, ", \"base_model_id\": null");
	appendStringInfoString(&s, ", \"model_name\": ");
	escape_json(&s, args->model_name);
	appendStringInfo(&s, ", \"seed\": " INT64_FORMAT ", \"image_size\": %d, \"base_width\": %d, "
					 "\"threads\": %d, \"num_classes\": %d",
					 args->seed, args->image_size, args->base_width, args->threads,
					 args->num_classes);
	if (args->cache_features)
		appendStringInfoString(&s, ", \"cache_features\": true");
	/* only the non-default is recorded; runs without the key use winograd */
	if (args->conv_algorithm == TL_CONV_IM2COL)
		appendStringInfoString(&s, ", \"conv_algorithm\": \"im2col\"");
	if (args->memory_limit >= 0)
		appendStringInfo(&s, ", \"memory_limit\": %d", args->memory_limit);
	if (classes)
	{
		appendStringInfoString(&s, ", \"classes\": [");
		for (int i = 0; i < classes->num_classes; i++)
		{
			if (i)
				appendStringInfoString(&s, ", ");
			escape_json(&s, classes->classes[i]);
		}
		appendStringInfoChar(&s, ']');
	}
	appendStringInfoChar(&s, '}');
	return s.data;
}

/*
 * A run's recorded arguments are input like any other: tl_runs is granted to
 * PUBLIC under row-level security, so a role can edit its own run (or insert
 * one) and call tl_resume.  Hold them to tl_train's rules again, including
 * the arguments' share of the memory estimate, so that a resumed run can't
 * do what tl_train refuses.
 */
static void
check_recorded_args(int64 run, const tl_run_args *args)
{
	const char *bad = NULL;
	double		estimate;

	if (args->epochs < 1)
		bad = "epochs";
	else if (args->batch_size < 1)
		bad = "batch_size";
	else if (args->step_size < 1)
		bad = "step_size";
	else if (!(args->lr > 0) || isinf(args->lr))
		bad = "lr";
	else if (!(args->momentum >= 0) || isinf(args->momentum))
		bad = "momentum";
	else if (!(args->gamma > 0) || isinf(args->gamma))
		bad = "gamma";
	else if (args->image_size < 32 || args->image_size > 1024)
		bad = "image_size";
	else if (args->base_width < 1 || args->base_width > 256)
		bad = "base_width";
	else if (args->num_classes < 2)
		bad = "num_classes";
	else if (args->cache_features && args->mode != TL_MODE_FEATURE_EXTRACTOR)
		bad = "cache_features";
	if (bad)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run " INT64_FORMAT " has an invalid %s in its recorded arguments", run, bad),
				 errhint("A run's arguments must pass the checks tl_train makes.")));
	if (args->threads < 1 || args->threads > 64)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run " INT64_FORMAT " has an invalid threads in its recorded arguments", run)));

	/*
	 * The limits are superuser settings: a superuser may have raised them for
	 * the session that started the run, anyone else runs under the values
	 * of its role and database, which this process has too.
	 */
	if (superuser())
		return;
	if (args->threads > tl_guc_train_threads)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("run " INT64_FORMAT " is recorded with %d threads, more than transfer.train_threads (%d)",
						run, args->threads, tl_guc_train_threads)));
	estimate = tl_train_memory_estimate(args, NULL);
	if (tl_guc_train_memory_limit > 0 &&
		estimate > (double) tl_guc_train_memory_limit * 1024.0 * 1024.0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("run " INT64_FORMAT " would need at least %.0f MB, more than transfer.train_memory_limit (%d MB)",
						run, estimate / (1024.0 * 1024.0), tl_guc_train_memory_limit)));
}

void
tl_run_args_load(int64 run, tl_run_args *args)
{
	StringInfoData q;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *mode;
	char	   *algo;

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT mode, dataset, (args->>'epochs')::int4, (args->>'batch_size')::int4, "
					 "(args->>'lr')::float8, (args->>'momentum')::float8, "
					 "(args->>'step_size')::int4, (args->>'gamma')::float8, "
					 "(args->>'from_scratch')::bool, args->>'base_model', "
					 "coalesce((args->>'base_model_id')::int8, 0), args->>'model_name', "
					 "(args->>'seed')::int8, (args->>'image_size')::int4, "
					 "(args->>'base_width')::int4, (args->>'threads')::int4, "
					 "(args->>'num_classes')::int4, "
					 "coalesce((args->>'cache_features')::bool, false), "
					 "coalesce(args->>'conv_algorithm', 'winograd'), "
					 "coalesce((args->>'memory_limit')::int4, -1) "
					 "FROM %s WHERE id = $1", tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read run " INT64_FORMAT, run);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("training run " INT64_FORMAT " does not exist", run)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	/* Every argument is required but base_model (NULL for runs from scratch). */
	for (int col = 1; col <= 17; col++)
	{
		bool		isnull;

		(void) SPI_getbinval(tup, desc, col, &isnull);
		if (isnull && col != 10)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("arguments of run " INT64_FORMAT " are incomplete", run)));
	}
#define INT_COL(n) DatumGetInt32(SPI_getbinval(tup, desc, (n), &isnull))
#define F8_COL(n) DatumGetFloat8(SPI_getbinval(tup, desc, (n), &isnull))
	{
		bool		isnull;

		mode = SPI_getvalue(tup, desc, 1);
		args->mode = strcmp(mode, "feature_extractor") == 0 ? TL_MODE_FEATURE_EXTRACTOR : TL_MODE_FINETUNE;
		args->dataset = SPI_getvalue(tup, desc, 2);
		args->epochs = INT_COL(3);
		args->batch_size = INT_COL(4);
		args->lr = F8_COL(5);
		args->momentum = F8_COL(6);
		args->step_size = INT_COL(7);
		args->gamma = F8_COL(8);
		args->from_scratch = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		args->base_model = SPI_getvalue(tup, desc, 10);
		args->base_model_id = DatumGetInt64(SPI_getbinval(tup, desc, 11, &isnull));
		args->model_name = SPI_getvalue(tup, desc, 12);
		args->seed = DatumGetInt64(SPI_getbinval(tup, desc, 13, &isnull));
		args->image_size = INT_COL(14);
		args->base_width = INT_COL(15);
		args->threads = INT_COL(16);
		args->num_classes = INT_COL(17);
		args->cache_features = DatumGetBool(SPI_getbinval(tup, desc, 18, &isnull));
		algo = SPI_getvalue(tup, desc, 19);
		args->memory_limit = Max(DatumGetInt32(SPI_getbinval(tup, desc, 20, &isnull)), -1);
		if (strcmp(algo, "winograd") == 0)
			args->conv_algorithm = TL_CONV_WINOGRAD;
		else if (strcmp(algo, "im2col") == 0)
			args->conv_algorithm = TL_CONV_IM2COL;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("run " INT64_FORMAT " has an invalid conv_algorithm in its recorded arguments", run),
					 errhint("Valid values are \"winograd\" and \"im2col\".")));
	}
#undef INT_COL
#undef F8_COL
	check_recorded_args(run, args);
}
