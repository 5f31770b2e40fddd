/*
 * train/source.c - training on the caller's own table, view or materialized
 * view (docs/training.md, "Training from your own table").
 *
 * tl_train resolves `dataset` with the caller's search_path when no
 * tl_images dataset has that name, checks the columns and the caller's
 * SELECT privilege, and reads the relation once: rows with a NULL image or
 * label, bytes that are not a JPEG or PNG, or images over the limits are
 * skipped (and counted), the split is the split column's or drawn with the
 * run's seed, and the resulting row set is recorded in tl_runs.args
 * ("source": its relation, columns and the ids of its train and val rows).
 *
 * A row's id is a 64-bit hash of its image bytes (the first 16 hex digits of
 * md5(img)): it needs no key, so views work, and it survives VACUUM FULL,
 * updates of other columns and dump/restore, where ctid does not.  The
 * worker reads exactly the recorded rows (by id, as the calling role, in one
 * snapshot), for a new run as for a resumed one.
 *
 * Every function runs inside a transaction with SPI connected.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "image_datum.h"
#include "pg_error.h"
#include "image/tl_image.h"
#include "train.h"
#include "transfer_pg.h"

/* The id of a row: its image's bytes hashed to a bigint (see above). */
char *
tl_source_id_expr(const char *img)
{
	return psprintf("('x'::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(%s), 1, 16))"
					"::pg_catalog.bit(64)::pg_catalog.int8",
					img);
}

Oid
tl_source_resolve_name(const char *dataset)
{
	char	   *raw = pstrdup(dataset);
	List	   *names;
	RangeVar   *rv;

	/* a name that does not parse (spaces, ...) is no relation: no error */
	if (!SplitIdentifierString(raw, '.', &names) || names == NIL || list_length(names) > 2)
		return InvalidOid;
	for (ListCell *lc = list_head(names); lc; lc = lnext(names, lc))
		if (((char *) lfirst(lc))[0] == '\0')
			return InvalidOid;
	if (list_length(names) == 2)
		rv = makeRangeVar(linitial(names), lsecond(names), -1);
	else
		rv = makeRangeVar(NULL, linitial(names), -1);
	return RangeVarGetRelid(rv, NoLock, true);
}

static bool
is_text_type(Oid t)
{
	return t == TEXTOID || t == VARCHAROID || t == BPCHAROID || t == NAMEOID;
}

static bool
is_label_type(Oid t)
{
	return is_text_type(t) || t == INT2OID || t == INT4OID || t == INT8OID;
}

/* The named column of rel, checked for type; ereports 42703 or 42804. */
static char *
check_column(Oid relid, const char *rel, const char *arg, const char *col, bool (*ok) (Oid),
			 const char *wanted)
{
	AttrNumber	att = get_attnum(relid, col);
	Oid			type;

	if (att == InvalidAttrNumber || att < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation %s does not exist", col, rel),
				 errhint("Name an existing column with %s => '...'.", arg)));
	type = getBaseType(get_atttype(relid, att));
	if (!ok(type))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation %s is of type %s, not %s",
						col, rel, format_type_be(get_atttype(relid, att)), wanted),
				 errhint("%s must name a column of type %s.", arg, wanted)));
	return pstrdup(col);
}

static bool
is_bytea(Oid t)
{
	return t == BYTEAOID;
}

/* Columns of rel whose base type passes ok(), as a quoted list, and their number. */
static int
candidates(Oid relid, bool (*ok) (Oid), StringInfo list, char **only)
{
	Relation	r = relation_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(r);
	int			n = 0;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped || !ok(getBaseType(a->atttypid)))
			continue;
		appendStringInfo(list, "%s\"%s\"", n ? ", " : "", NameStr(a->attname));
		if (only)
			*only = pstrdup(NameStr(a->attname));
		n++;
	}
	relation_close(r, AccessShareLock);
	return n;
}

static void
check_select(Oid relid, const char *rel, const tl_source *src)
{
	const char *cols[3] = {src->image_column, src->label_column, src->split_column};

	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK)
		return;
	for (int i = 0; i < 3; i++)
		if (cols[i] != NULL &&
			pg_attribute_aclcheck(relid, get_attnum(relid, cols[i]), GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for relation %s", rel),
					 errdetail("The training worker reads the relation as role \"%s\", which may not SELECT column \"%s\".",
							   GetUserNameFromId(GetUserId(), false), cols[i]),
					 errhint("GRANT SELECT ON %s TO %s.", rel,
							 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

void
tl_source_columns(Oid relid, const char *image_column, const char *label_column,
				  const char *split_column, tl_source *src)
{
	char		relkind = get_rel_relkind(relid);
	char	   *rel;

	memset(src, 0, sizeof(*src));
	src->schema = get_namespace_name(get_rel_namespace(relid));
	src->relation = get_rel_name(relid);
	rel = quote_qualified_identifier(src->schema, src->relation);
	src->qualified = rel;
	if (relkind != RELKIND_RELATION && relkind != RELKIND_VIEW && relkind != RELKIND_MATVIEW &&
		relkind != RELKIND_PARTITIONED_TABLE && relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s is not a table or view", rel)));

	if (image_column)
		src->image_column = check_column(relid, rel, "image_column", image_column, is_bytea, "bytea");
	else
	{
		StringInfoData l;
		int			n;

		initStringInfo(&l);
		n = candidates(relid, is_bytea, &l, &src->image_column);
		if (n != 1)
			ereport(ERROR,
					(errcode(n == 0 ? ERRCODE_UNDEFINED_COLUMN : ERRCODE_AMBIGUOUS_COLUMN),
					 errmsg("relation %s has %s bytea column", rel, n == 0 ? "no" : "more than one"),
					 n ? errdetail("The bytea columns are %s.", l.data) : 0,
					 errhint("Name the column of images with image_column => '...'.")));
	}

	if (label_column)
		src->label_column = check_column(relid, rel, "label_column", label_column, is_label_type,
										 "text or integer");
	else if (get_attnum(relid, "label") != InvalidAttrNumber)
		src->label_column = check_column(relid, rel, "label_column", "label", is_label_type,
										 "text or integer");
	else if (get_attnum(relid, "class") != InvalidAttrNumber)
		src->label_column = check_column(relid, rel, "label_column", "class", is_label_type,
										 "text or integer");
	else
	{
		StringInfoData l;

		initStringInfo(&l);
		(void) candidates(relid, is_label_type, &l, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("relation %s has no column \"label\" or \"class\"", rel),
				 l.len ? errdetail("Text and integer columns: %s.", l.data) : 0,
				 errhint("Name the column of class labels with label_column => '...'.")));
	}

	if (split_column)
		src->split_column = check_column(relid, rel, "split_column", split_column, is_text_type, "text");
	else if (get_attnum(relid, "split") != InvalidAttrNumber)
		src->split_column = check_column(relid, rel, "split_column", "split", is_text_type, "text");

	check_select(relid, rel, src);
}

/* One usable row of the source. */
typedef struct src_row
{
	int64		id;
	char	   *label;
	int			split;			/* 0 train, 1 val, -1 drawn */
} src_row;

static int
cmp_row_id(const void *a, const void *b)
{
	const src_row *x = a,
			   *y = b;
	int			c = (x->id > y->id) - (x->id < y->id);

	return c ? c : strcmp(x->label, y->label);
}

/* Train rows first, then val; each by label (ImageFolder order), then id. */
static int
cmp_row_order(const void *a, const void *b)
{
	const src_row *x = a,
			   *y = b;
	int			c = x->split - y->split;

	if (c == 0)
		c = strcmp(x->label, y->label);
	return c ? c : (x->id > y->id) - (x->id < y->id);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

void
tl_source_read(tl_source *src, double val_fraction, int64 seed, tl_dataset_info *info,
			   tl_data_size *size)
{
	StringInfoData q;
	SPIPlanPtr	plan;
	Portal		portal;
	src_row    *rows = NULL;
	int			n = 0,
				cap = 0;
	int64		null_image = 0,
				null_label = 0,
				bad = 0,
				too_big = 0;
	char	  **labels;
	int			n_labels = 0;
	const char *rel = src->qualified;

	memset(info, 0, sizeof(*info));
	memset(size, 0, sizeof(*size));
	src->val_fraction = val_fraction;
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT %s, (%s)::pg_catalog.text, (%s)::pg_catalog.text, %s FROM %s",
					 tl_source_id_expr(quote_identifier(src->image_column)),
					 quote_identifier(src->label_column),
					 src->split_column ? quote_identifier(src->split_column) : "NULL",
					 quote_identifier(src->image_column), rel);
	plan = SPI_prepare(q.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the scan of %s", rel);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 64);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		img_null;
			Datum		imgd = SPI_getbinval(tup, desc, 4, &img_null);
			char	   *label = SPI_getvalue(tup, desc, 2);
			char	   *split = SPI_getvalue(tup, desc, 3);
			size_t		len;
			int			w,
						h;
			int			s = -1;

			if (img_null)
			{
				null_image++;
				continue;
			}
			if (label == NULL || label[0] == '\0')
			{
				null_label++;
				continue;
			}
			if (src->split_column)
			{
				if (split == NULL)
					continue;
				if (strcmp(split, "train") == 0)
					s = 0;
				else if (strcmp(split, "val") == 0)
					s = 1;
				else
					continue;	/* 'test' and others are not the run's */
			}
			switch (tl_image_datum_usability(imgd, &len, &w, &h))
			{
				case TL_IMAGE_USABLE:
					break;
				case TL_IMAGE_TOO_BIG:
					too_big++;
					continue;
				case TL_IMAGE_UNREADABLE:
					bad++;
					continue;
			}
			tl_data_size_add(size, len, w, h);
			if (n == cap)
			{
				cap = cap ? cap * 2 : 256;
				rows = rows ? repalloc(rows, sizeof(src_row) * cap) : palloc(sizeof(src_row) * cap);
			}
			rows[n].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &img_null));
			rows[n].label = pstrdup(label);
			rows[n].split = s;
			n++;
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);

	src->skipped = null_image + null_label + bad + too_big;
	if (src->skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped " INT64_FORMAT " rows of %s", src->skipped, rel),
				 errdetail(INT64_FORMAT " with a NULL image, " INT64_FORMAT " with a NULL or empty label, "
						   INT64_FORMAT " not a JPEG or PNG image, " INT64_FORMAT " over transfer.max_image_file_size or transfer.max_image_pixels.",
						   null_image, null_label, bad, too_big)));

	/* The drawn split: a seeded shuffle of the rows in id order, reproducible. */
	if (!src->split_column && n > 0)
	{
		int32	   *perm = palloc(sizeof(int32) * n);
		int			n_val = (int) floor(n * val_fraction + 0.5);
		tl_rng		rng;

		qsort(rows, n, sizeof(src_row), cmp_row_id);
		for (int i = 0; i < n; i++)
			perm[i] = i;
		tl_rng_seed(&rng, (uint64) seed);
		tl_rng_shuffle(&rng, perm, n);
		for (int i = 0; i < n; i++)
			rows[perm[i]].split = i < n_val ? 1 : 0;
	}
	if (n > 0)
		qsort(rows, n, sizeof(src_row), cmp_row_order);

	labels = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (rows[i].split == 0)
		{
			info->n_train++;
			if (n_labels == 0 || strcmp(labels[n_labels - 1], rows[i].label) != 0)
				labels[n_labels++] = rows[i].label;
		}
		else
			info->n_val++;
	}
	if (info->n_train == 0 || info->n_val == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("relation %s has no usable rows in the %s part", rel,
						info->n_train == 0 ? "train" : "val"),
				 errdetail("It has " INT64_FORMAT " train and " INT64_FORMAT " val rows with an image and a label; " INT64_FORMAT " rows were skipped.",
						   info->n_train, info->n_val, src->skipped),
				 src->split_column
				 ? errhint("Column \"%s\" must hold 'train' for some rows and 'val' for others.", src->split_column)
				 : errhint("Add rows, or choose a val_fraction that leaves rows in both parts.")));
	if (n_labels < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("relation %s has only %d class in its train part", rel, n_labels),
				 errhint("A classifier needs at least two distinct values in column \"%s\".",
						 src->label_column)));
	qsort(labels, n_labels, sizeof(char *), cmp_str);
	info->num_classes = n_labels;
	info->classes = labels;
	for (int i = info->n_train; i < n; i++)
		if (tl_dataset_class_index(info, rows[i].label) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("relation %s has class \"%s\" in its val part that its train part lacks",
							rel, rows[i].label),
					 src->split_column ? 0 : errhint("Add rows of that class, or use a split column.")));

	src->n_train = (int) info->n_train;
	src->n_val = (int) info->n_val;
	src->ids = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
		src->ids[i] = rows[i].id;
}

static void
append_ids(StringInfo s, const int64 *ids, int n)
{
	appendStringInfoChar(s, '[');
	for (int i = 0; i < n; i++)
		appendStringInfo(s, "%s" INT64_FORMAT, i ? ", " : "", ids[i]);
	appendStringInfoChar(s, ']');
}

char *
tl_source_args_json(const char *json, const tl_source *src)
{
	StringInfoData s;
	size_t		len = strlen(json);

	Assert(len > 0 && json[len - 1] == '}');
	initStringInfo(&s);
	appendBinaryStringInfo(&s, json, len - 1);
	appendStringInfoString(&s, ", \"source\": {\"schema\": ");
	escape_json(&s, src->schema);
	appendStringInfoString(&s, ", \"relation\": ");
	escape_json(&s, src->relation);
	appendStringInfoString(&s, ", \"image_column\": ");
	escape_json(&s, src->image_column);
	appendStringInfoString(&s, ", \"label_column\": ");
	escape_json(&s, src->label_column);
	appendStringInfoString(&s, ", \"split_column\": ");
	if (src->split_column)
		escape_json(&s, src->split_column);
	else
		appendStringInfoString(&s, "null");
	appendStringInfo(&s, ", \"val_fraction\": %.17g, \"skipped\": " INT64_FORMAT ", \"train_ids\": ",
					 src->val_fraction, src->skipped);
	append_ids(&s, src->ids, src->n_train);
	appendStringInfoString(&s, ", \"val_ids\": ");
	append_ids(&s, src->ids + src->n_train, src->n_val);
	appendStringInfoString(&s, "}}");
	return s.data;
}

bool
tl_source_load(int64 run, tl_source *src)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int64	   *train,
			   *val;
	MemoryContext cxt = CurrentMemoryContext;	/* the result's: SPI_execute returns in SPI's */

	memset(src, 0, sizeof(*src));
	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT s->>'schema', s->>'relation', s->>'image_column', s->>'label_column', "
					 "s->>'split_column', "
					 "ARRAY(SELECT x::int8 FROM jsonb_array_elements_text(s->'train_ids') x), "
					 "ARRAY(SELECT x::int8 FROM jsonb_array_elements_text(s->'val_ids') x) "
					 "FROM (SELECT args->'source' AS s FROM %s WHERE id = $1) r "
					 "WHERE jsonb_typeof(s) = 'object'", tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the source of run " INT64_FORMAT, run);
	MemoryContextSwitchTo(cxt);
	if (SPI_processed != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	src->schema = SPI_getvalue(tup, desc, 1);
	src->relation = SPI_getvalue(tup, desc, 2);
	src->image_column = SPI_getvalue(tup, desc, 3);
	src->label_column = SPI_getvalue(tup, desc, 4);
	if (!src->schema || !src->relation || !src->image_column || !src->label_column)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("run " INT64_FORMAT " has an incomplete source recorded", run)));
	src->qualified = quote_qualified_identifier(src->schema, src->relation);
	src->split_column = SPI_getvalue(tup, desc, 5);
	train = array_int64(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull)), &src->n_train);
	val = array_int64(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 7, &isnull)), &src->n_val);
	if (src->n_train == 0 || src->n_val == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the source of run " INT64_FORMAT " lists no %s rows",
						run, src->n_train == 0 ? "train" : "val")));
	src->ids = palloc(sizeof(int64) * (src->n_train + src->n_val));
	memcpy(src->ids, train, sizeof(int64) * src->n_train);
	memcpy(src->ids + src->n_train, val, sizeof(int64) * src->n_val);
	return true;
}

char *
tl_source_rows_sql(const tl_source *src)
{
	char	   *img = pstrdup(quote_identifier(src->image_column));
	char	   *id = tl_source_id_expr(img);

	char	   *label = pstrdup(quote_identifier(src->label_column));

	/* the rows tl_train could have taken: a duplicate image may sit in another */
	return psprintf("SELECT %s, NULL::pg_catalog.text, (%s)::pg_catalog.text, %s FROM %s "
					"WHERE %s OPERATOR(pg_catalog.=) ANY ($1) AND (%s)::pg_catalog.text OPERATOR(pg_catalog.<>) ''%s%s%s",
					id, label, img, src->qualified, id, label,
					src->split_column ? " AND (" : "",
					src->split_column ? quote_identifier(src->split_column) : "",
					src->split_column ? ")::pg_catalog.text OPERATOR(pg_catalog.=) ANY ('{train,val}'::pg_catalog.text[])" : "");
}

/* Whether tl_images has rows of this dataset that the caller can read. */
static bool
tl_images_has(const char *dataset)
{
	StringInfoData q;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(dataset)};
	Oid			images = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(tl_qualified("tl_images"))),
										  NoLock, false);

	/* tl_images is not readable by default: a role without it has none */
	if (pg_class_aclcheck(images, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		return false;
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT 1 FROM %s WHERE dataset OPERATOR(pg_catalog.=) $1 LIMIT 1",
					 tl_qualified("tl_images"));
	if (SPI_execute_with_args(q.data, 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read tl_images");
	return SPI_processed > 0;
}

#define TL_TRAIN_ARG_IMAGE_COLUMN 16	/* image_column, label_column, split_column, val_fraction */

bool
tl_source_prepare(FunctionCallInfo fcinfo, const char *dataset, Oid relid, int64 seed,
				  tl_source *src, tl_dataset_info *info, tl_data_size *size)
{
	const char *cols[3] = {NULL, NULL, NULL};
	double		val_fraction = 0.2;
	bool		given = false;

	/* 0.1.0's declaration of tl_train has none of these arguments */
	for (int i = 0; i < 3; i++)
		if (PG_NARGS() > TL_TRAIN_ARG_IMAGE_COLUMN + i && !PG_ARGISNULL(TL_TRAIN_ARG_IMAGE_COLUMN + i))
		{
			cols[i] = text_to_cstring(PG_GETARG_TEXT_PP(TL_TRAIN_ARG_IMAGE_COLUMN + i));
			given = true;
		}
	if (PG_NARGS() > TL_TRAIN_ARG_IMAGE_COLUMN + 3)
	{
		if (PG_ARGISNULL(TL_TRAIN_ARG_IMAGE_COLUMN + 3))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"val_fraction\" of tl_train must not be null")));
		val_fraction = PG_GETARG_FLOAT8(TL_TRAIN_ARG_IMAGE_COLUMN + 3);
		if (!(val_fraction > 0 && val_fraction < 1))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("val_fraction must be between 0 and 1 (exclusive), not %g", val_fraction)));
	}

	if (tl_images_has(dataset))
	{
		if (given)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("image_column, label_column and split_column apply only to a table or view"),
					 errdetail("\"%s\" names a dataset of tl_images, which takes precedence.", dataset)));
		return false;
	}
	if (!OidIsValid(relid))
	{
		if (given)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"%s\" does not exist", dataset),
					 errhint("Name a table or view on your search_path, or schema-qualify it.")));
		return false;
	}
	tl_source_columns(relid, cols[0], cols[1], cols[2], src);
	tl_source_read(src, val_fraction, seed, info, size);
	return true;
}
