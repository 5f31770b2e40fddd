/*
 * source.h - a table, view or materialized view of the caller as a dataset
 * (train/source.c): what tl_train records of it and what tl_evaluate reads.
 */
#ifndef TL_SOURCE_H
#define TL_SOURCE_H

#include "postgres.h"

/*
 * A table, view or materialized view of the caller as a run's data.  ids:
 * n_train then n_val row ids (hashes of the image bytes), for tl_train only.
 */
typedef struct tl_source
{
	char	   *schema;
	char	   *relation;
	char	   *qualified;		/* quoted schema.relation */
	char	   *image_column;
	char	   *label_column;
	char	   *split_column;	/* NULL: the split is drawn with the run's seed */
	double		val_fraction;
	int64		skipped;		/* rows tl_train skipped */
	int64	   *ids;
	int			n_train;
	int			n_val;
} tl_source;

/* The relation `dataset` names with the current search_path, or InvalidOid. */
extern Oid	tl_source_resolve_name(const char *dataset);
/* Resolve and check the columns (NULL: defaults) and the SELECT privilege. */
extern void tl_source_columns(Oid relid, const char *image_column, const char *label_column,
							  const char *split_column, tl_source *src);
/* SQL expression of a row's id: a bigint hash of the image bytes in column img (quoted). */
extern char *tl_source_id_expr(const char *img);

#endif
