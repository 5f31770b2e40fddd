/*
 * ingest.c - getting images into tl_images.
 *
 * tl_import_folder() reads an ImageFolder tree <path>/<split>/<class>/<file>
 * (the layout of the tutorial's hymenoptera_data) from the server's file
 * system and inserts every JPEG and PNG through SPI.  Like COPY FROM a file it
 * needs superuser or pg_read_server_files; it runs as the caller, so the
 * caller's privileges and row-level security on tl_images apply.
 *
 * tl_image_info() exposes the same header check to clients that load images
 * themselves (scripts/load-folder.sh).
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "pg_error.h"
#include "image/tl_image.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_image_info);
PG_FUNCTION_INFO_V1(tl_import_folder);

/* The split directories, in the order they are imported and reported. */
static const char *const split_names[] = {"train", "val", "test"};

/* One row of tl_import_folder's result: the counts of one class directory. */
typedef struct class_counts
{
	const char *split;
	char	   *label;
	int64		imported;		/* new rows */
	int64		existing;		/* already in tl_images: same dataset, split, label, name */
	int64		skipped;		/* files that are not importable images */
} class_counts;

typedef struct import_state
{
	Datum		dataset;
	SPIPlanPtr	insert_plan;
	MemoryContext file_cxt;		/* reset after every file */
	int64		max_file_bytes;
} import_state;

/*
 * tl_image_info(img bytea) -> (format, width, height), from the header only.
 * Errors (with the core's SQLSTATE) for anything but a JPEG or PNG header.
 */
Datum
tl_image_info(PG_FUNCTION_ARGS)
{
	bytea	   *img = PG_GETARG_BYTEA_PP(0);
	tl_image_format fmt;
	int			width;
	int			height;
	tl_error	err;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	tl_error_clear(&err);
	if (tl_image_probe((const uint8_t *) VARDATA_ANY(img), VARSIZE_ANY_EXHDR(img),
					   &fmt, &width, &height, &err) != TL_OK)
		tl_pg_raise(&err, NULL);

	values[0] = CStringGetTextDatum(tl_image_format_name(fmt));
	values[1] = Int32GetDatum(width);
	values[2] = Int32GetDatum(height);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

static int
compare_names(const ListCell *a, const ListCell *b)
{
	return strcmp((const char *) lfirst(a), (const char *) lfirst(b));
}

/*
 * The entries of a directory in byte order, so imports (and the ids they
 * assign) are the same on every machine.  Hidden entries are left out.
 */
static List *
sorted_entries(const char *dir)
{
	DIR		   *d = AllocateDir(dir);
	struct dirent *de;
	List	   *names = NIL;

	/* ReadDir reports a failed AllocateDir, with the directory's name. */
	while ((de = ReadDir(d, dir)) != NULL)
	{
		if (de->d_name[0] == '.')
			continue;
		names = lappend(names, pstrdup(de->d_name));
	}
	FreeDir(d);
	list_sort(names, compare_names);
	return names;
}

static bool
valid_name(const char *name)
{
	return pg_verifymbstr(name, strlen(name), true);
}

static bool
is_directory(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Read a whole regular file of at most max_bytes into a new bytea.  Returns
 * NULL when it turns out not to be a regular file.  O_NONBLOCK keeps a FIFO
 * swapped in after the caller's stat() from blocking the backend.
 */
static bytea *
read_image_file(const char *path, int64 max_bytes, const char *shown)
{
	int			fd;
	struct stat st;
	bytea	   *buf;
	size_t		len = 0;

	fd = OpenTransientFile(path, O_RDONLY | O_NONBLOCK | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path)));
	if (!S_ISREG(st.st_mode))
	{
		CloseTransientFile(fd);
		return NULL;
	}
	if (st.st_size > max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("file \"%s\" grew beyond transfer.max_image_file_size while being imported",
						shown)));

	buf = (bytea *) palloc(VARHDRSZ + st.st_size);
	while (len < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, VARDATA(buf) + len, st.st_size - len);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", path)));
		}
		if (n == 0)
			break;				/* the file shrank; the header check judges what is left */
		len += n;
	}
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", path)));
	SET_VARSIZE(buf, VARHDRSZ + len);
	return buf;
}

/* Import one file of a class directory, counting it in *counts. */
static void
import_file(import_state *st, class_counts *counts, const char *class_dir,
			const char *name)
{
	char	   *path;
	char	   *shown;
	struct stat sb;
	bytea	   *img;
	tl_image_format fmt;
	int			width;
	int			height;
	tl_error	err;
	tl_code		rc;
	Datum		values[5];
	int			spi_rc;

	if (!valid_name(name))
	{
		ereport(NOTICE,
				(errmsg("skipping a file in \"%s/%s\" whose name is not valid in encoding \"%s\"",
						counts->split, counts->label, GetDatabaseEncodingName())));
		counts->skipped++;
		return;
	}

	path = psprintf("%s/%s", class_dir, name);
	/* Notices name files relative to the imported folder: short and stable. */
	shown = psprintf("%s/%s/%s", counts->split, counts->label, name);

	if (stat(path, &sb) != 0)
	{
		struct stat lsb;

		/* A dangling symbolic link is just another entry that isn't an image. */
		if (errno != ENOENT || lstat(path, &lsb) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat file \"%s\": %m", path)));
		sb.st_mode = lsb.st_mode;
	}
	if (!S_ISREG(sb.st_mode))
	{
		ereport(NOTICE,
				(errmsg("skipping \"%s\": not a regular file", shown)));
		counts->skipped++;
		return;
	}
	if (sb.st_size > st->max_file_bytes)
	{
		ereport(WARNING,
				(errmsg("skipping \"%s\": file of %lld bytes exceeds transfer.max_image_file_size (%lld bytes)",
						shown, (long long) sb.st_size, (long long) st->max_file_bytes),
				 errhint("Raise transfer.max_image_file_size to import it.")));
		counts->skipped++;
		return;
	}

	img = read_image_file(path, st->max_file_bytes, shown);
	if (img == NULL)
	{
		ereport(NOTICE,
				(errmsg("skipping \"%s\": not a regular file", shown)));
		counts->skipped++;
		return;
	}

	tl_error_clear(&err);
	rc = tl_image_probe((const uint8_t *) VARDATA(img), VARSIZE(img) - VARHDRSZ,
						&fmt, &width, &height, &err);
	if (rc == TL_E_UNSUPPORTED || rc == TL_E_CORRUPT || rc == TL_E_LIMIT)
	{
		ereport(NOTICE,
				(errmsg("skipping \"%s\": %s", shown, err.message)));
		counts->skipped++;
		return;
	}
	if (rc != TL_OK)
		tl_pg_raise(&err, shown);
	if ((int64) width * height > tl_guc_max_image_pixels)
	{
		ereport(NOTICE,
				(errmsg("skipping \"%s\": %dx%d pixels exceed transfer.max_image_pixels (%d)",
						shown, width, height, tl_guc_max_image_pixels)));
		counts->skipped++;
		return;
	}

	values[0] = st->dataset;
	values[1] = CStringGetTextDatum(counts->split);
	values[2] = CStringGetTextDatum(counts->label);
	values[3] = CStringGetTextDatum(name);
	values[4] = PointerGetDatum(img);
	spi_rc = SPI_execute_plan(st->insert_plan, values, NULL, false, 0);
	if (spi_rc != SPI_OK_INSERT)
		elog(ERROR, "inserting into tl_images failed: %s", SPI_result_code_string(spi_rc));
	if (SPI_processed == 1)
		counts->imported++;
	else
		counts->existing++;
}

/* Import the class directories of one split; appends their counts to *rows. */
static void
import_split(import_state *st, const char *split, const char *split_dir,
			 MemoryContext result_cxt, List **rows)
{
	List	   *entries = sorted_entries(split_dir);
	ListCell   *lc;

	foreach(lc, entries)
	{
		const char *label = lfirst(lc);
		char	   *class_dir = psprintf("%s/%s", split_dir, label);
		class_counts *counts;
		List	   *files;
		ListCell   *fc;

		if (!is_directory(class_dir))
		{
			if (valid_name(label))
				ereport(NOTICE,
						(errmsg("skipping \"%s/%s\": not inside a class directory",
								split, label)));
			else
				ereport(NOTICE,
						(errmsg("skipping a file in \"%s\" whose name is not valid in encoding \"%s\"",
								split, GetDatabaseEncodingName())));
			continue;
		}
		if (!valid_name(label))
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("a class directory in \"%s\" has a name that is not valid in encoding \"%s\"",
							split, GetDatabaseEncodingName()),
					 errhint("Class directory names become labels; rename it.")));

		counts = MemoryContextAllocZero(result_cxt, sizeof(class_counts));
		counts->split = split;
		counts->label = MemoryContextStrdup(result_cxt, label);

		files = sorted_entries(class_dir);
		foreach(fc, files)
		{
			MemoryContext old;

			CHECK_FOR_INTERRUPTS();
			old = MemoryContextSwitchTo(st->file_cxt);
			import_file(st, counts, class_dir, lfirst(fc));
			MemoryContextSwitchTo(old);
			MemoryContextReset(st->file_cxt);
		}
		list_free_deep(files);

		{
			MemoryContext old = MemoryContextSwitchTo(result_cxt);

			*rows = lappend(*rows, counts);
			MemoryContextSwitchTo(old);
		}
	}
	list_free_deep(entries);
}

/*
 * tl_import_folder(dataset, path) -> (split, label, imported, existing, skipped)
 *
 * Imports <path>/{train,val,test}/<class>/<file>.  Files that are not JPEG or
 * PNG images (by their bytes, not their names) are skipped with a NOTICE
 * naming them; images already present are left as they are, so running it
 * again imports nothing new.
 */
Datum
tl_import_folder(PG_FUNCTION_ARGS)
{
	MemoryContext result_cxt = CurrentMemoryContext;
	import_state st;
	char	   *dataset;
	char	   *path;
	struct stat sb;
	bool		found_split[lengthof(split_names)];
	bool		any_split = false;
	List	   *entries;
	List	   *rows = NIL;
	ListCell   *lc;
	char	   *nspname;
	char	   *sql;
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID};
	ReturnSetInfo *rsinfo;

	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to import images from server files"),
				 errdetail("Only roles with privileges of the \"pg_read_server_files\" role may read files on the server."),
				 errhint("Use scripts/load-folder.sh to load images from the client side.")));

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(0) ? "dataset" : "path")));
	dataset = text_to_cstring(PG_GETARG_TEXT_PP(0));
	path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (dataset[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset name must not be empty")));
	if (path[0] == '\0' || !is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("path must be absolute: \"%s\"", path),
				 errhint("The path is read by the server process, so give its full name.")));
	canonicalize_path(path);

	if (stat(path, &sb) != 0)
	{
		if (errno == ENOENT)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("directory \"%s\" does not exist", path)));
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not access \"%s\": %m", path)));
	}
	if (!S_ISDIR(sb.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a directory", path)));

	/* Say what is ignored at the top, so a misnamed split is easy to spot. */
	entries = sorted_entries(path);
	foreach(lc, entries)
	{
		const char *name = lfirst(lc);
		bool		is_split = false;

		for (int i = 0; i < lengthof(split_names); i++)
			if (strcmp(name, split_names[i]) == 0 &&
				is_directory(psprintf("%s/%s", path, name)))
				is_split = true;
		if (!is_split && valid_name(name))
			ereport(NOTICE,
					(errmsg("ignoring \"%s\": not a split directory (train, val or test)",
							name)));
	}
	for (int i = 0; i < lengthof(split_names); i++)
	{
		found_split[i] = is_directory(psprintf("%s/%s", path, split_names[i]));
		any_split |= found_split[i];
	}
	if (!any_split)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("no split directories in \"%s\"", path),
				 errhint("Expected the layout <path>/<split>/<class>/<file> with split directories named train, val or test.")));

	nspname = get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid));
	sql = psprintf("INSERT INTO %s.tl_images (dataset, split, label, name, img) "
				   "VALUES ($1, $2, $3, $4, $5) "
				   "ON CONFLICT (dataset, split, label, name) DO NOTHING",
				   quote_identifier(nspname));

	st.dataset = CStringGetTextDatum(dataset);
	st.max_file_bytes = (int64) tl_guc_max_image_file_size * 1024;
	st.file_cxt = AllocSetContextCreate(CurrentMemoryContext, "tl_import_folder file",
										ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	st.insert_plan = SPI_prepare(sql, lengthof(argtypes), argtypes);
	if (st.insert_plan == NULL)
		elog(ERROR, "preparing the insert into tl_images failed: %s",
			 SPI_result_code_string(SPI_result));

	for (int i = 0; i < lengthof(split_names); i++)
		if (found_split[i])
			import_split(&st, split_names[i], psprintf("%s/%s", path, split_names[i]),
						 result_cxt, &rows);

	SPI_finish();
	MemoryContextDelete(st.file_cxt);

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	foreach(lc, rows)
	{
		class_counts *c = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		values[0] = CStringGetTextDatum(c->split);
		values[1] = CStringGetTextDatum(c->label);
		values[2] = Int64GetDatum(c->imported);
		values[3] = Int64GetDatum(c->existing);
		values[4] = Int64GetDatum(c->skipped);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
