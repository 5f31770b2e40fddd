/*
 * model_file.c - loaded models shared between processes as mapped files.
 *
 * Every backend and parallel worker that predicts builds its own network
 * from the tables: ~23,000 TOAST chunks read and ~120 MB of fresh memory
 * (the weights and the kernels' layouts of them), which on a virtual
 * machine is most of a first prediction's ~250 ms.  So a process that has
 * built a model writes the built network to a file (tl_resnet_mapfile.c),
 * and later ones map it: its pages are the page cache's, shared by every
 * process, and mapping them costs a few ms.
 *
 * Writing the file costs about as much again (~0.4 s for 120 MB on the
 * same machine), which a model used by a single session would pay for
 * nothing.  So the first process to build a model version only leaves an
 * empty marker ("<file>.seen"); the second one writes the file.
 *
 * Correctness does not depend on the files.  A file is named by everything
 * the network is built from: the database, the model's row version (id,
 * xmin, ctid), the version of its tensors' rows and the convolution
 * algorithm.  model_cache.c reads that identity from the tables in the
 * caller's snapshot, as the caller, on every call (privileges and row-level
 * security apply there), and asks for the file of exactly that identity:
 * a changed model has another name and an unchanged one the same content.
 * A file that does not check out (tl_resnet_mapfile_open) is removed and
 * the model is loaded from the tables.
 *
 * Files live in the default tablespace's temporary-files directory
 * (base/pgsql_tmp), named with PostgreSQL's temporary-file prefix: the
 * server removes them when it starts (also after a crash), base backups
 * skip them, and nothing outside the server's OS user can write them.
 * They are written under a temporary name and renamed, so a reader sees a
 * whole file or none.  At most TL_MODEL_FILES_MAX exist (markers count):
 * writing one removes the other files of the same model, then the least
 * recently written.
 * Mappings are private (MAP_PRIVATE): nothing a process does to its network
 * reaches the file.  transfer.model_files = off (superuser) turns them off.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_tablespace_d.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/fd.h"

#include "model_file.h"
#include "transfer_pg.h"

#define TL_MODEL_FILE_PREFIX PG_TEMP_FILE_PREFIX "_transfer_"
#define TL_MODEL_FILES_MAX 8

static void
model_dir(char *dir)
{
	TempTablespacePath(dir, DEFAULTTABLESPACE_OID);
}

static void
model_file_path(char *path, const tl_model_file_key *k)
{
	char		dir[MAXPGPATH];

	model_dir(dir);
	snprintf(path, MAXPGPATH, "%s/%s%u_" INT64_FORMAT "_%u_%u_%u_%016llx_%d", dir,
			 TL_MODEL_FILE_PREFIX, k->database, k->id, k->xmin,
			 ItemPointerGetBlockNumberNoCheck(&k->ctid), ItemPointerGetOffsetNumberNoCheck(&k->ctid),
			 (unsigned long long) k->tensors_version, (int) k->algo);
}

static void
release_mapping(void *base, size_t bytes)
{
	(void) munmap(base, bytes);
}

tl_resnet *
tl_model_file_open(const tl_model_file_key *key)
{
	char		path[MAXPGPATH];
	struct stat st;
	void	   *base;
	tl_resnet  *net;
	tl_error	err;
	int			fd;

	if (!tl_guc_model_files)
		return NULL;
	model_file_path(path, key);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		return NULL;			/* none yet */
	if (fstat(fd, &st) != 0 || st.st_size <= 0)
	{
		CloseTransientFile(fd);
		return NULL;
	}
	/* private and writable: the network's writes stay in this process */
	base = mmap(NULL, (size_t) st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CloseTransientFile(fd);
	if (base == MAP_FAILED)
		return NULL;
	tl_error_clear(&err);
	net = tl_resnet_mapfile_open(base, (size_t) st.st_size, release_mapping, &err);
	if (net == NULL)
	{
		(void) munmap(base, (size_t) st.st_size);
		ereport(LOG,
				(errmsg("removing model file \"%s\": %s", path, err.message)));
		(void) unlink(path);
	}
	else
		elog(DEBUG1, "model " INT64_FORMAT " mapped from \"%s\"", key->id, path);
	return net;
}

typedef struct file_writer
{
	int			fd;
	const char *path;
} file_writer;

static tl_code
write_at(void *ctx, const void *buf, size_t bytes, uint64_t offset, tl_error *err)
{
	file_writer *w = ctx;
	const char *p = buf;

	while (bytes > 0)
	{
		ssize_t		n = pwrite(w->fd, p, Min(bytes, (size_t) 1 << 30), (off_t) offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return tl_fail(err, TL_E_IO, "could not write \"%s\": %s", w->path,
						   n < 0 ? strerror(errno) : "no space written");
		p += n;
		bytes -= (size_t) n;
		offset += (uint64_t) n;
	}
	return TL_OK;
}

typedef struct file_entry
{
	char		name[MAXPGPATH];
	time_t		mtime;
} file_entry;

/*
 * Make room for key's file (keep) and marker (keep_mark): remove the other
 * files and markers of the same model (its older versions), then the least
 * recently written ones beyond the limit.  Temporary names being written
 * (".tmp") are left to their writers.
 */
static void
remove_stale(const char *dir, const tl_model_file_key *key, const char *keep, const char *keep_mark)
{
	DIR		   *d = AllocateDir(dir);
	struct dirent *de;
	file_entry *files = palloc(sizeof(file_entry) * 64);
	int			n = 0,
				cap = 64;
	char		same_model[64];

	snprintf(same_model, sizeof(same_model), "%s%u_" INT64_FORMAT "_",
			 TL_MODEL_FILE_PREFIX, key->database, key->id);
	/* best effort: a directory that cannot be read leaves the files as they are */
	while ((de = ReadDirExtended(d, dir, DEBUG1)) != NULL)
	{
		char		path[MAXPGPATH];
		struct stat st;

		if (strncmp(de->d_name, TL_MODEL_FILE_PREFIX, strlen(TL_MODEL_FILE_PREFIX)) != 0 ||
			strstr(de->d_name, ".tmp") != NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (strcmp(path, keep) == 0 || strcmp(path, keep_mark) == 0)
			continue;
		if (strncmp(de->d_name, same_model, strlen(same_model)) == 0)
		{
			(void) unlink(path);
			continue;
		}
		if (stat(path, &st) != 0)
			continue;
		if (n == cap)
		{
			cap *= 2;
			files = repalloc(files, sizeof(file_entry) * cap);
		}
		strlcpy(files[n].name, path, MAXPGPATH);
		files[n].mtime = st.st_mtime;
		n++;
	}
	FreeDir(d);
	while (n > TL_MODEL_FILES_MAX - 1)
	{
		int			oldest = 0;

		for (int i = 1; i < n; i++)
			if (files[i].mtime < files[oldest].mtime)
				oldest = i;
		(void) unlink(files[oldest].name);
		files[oldest] = files[--n];
	}
	pfree(files);
}

void
tl_model_file_save(const tl_model_file_key *key, tl_resnet *net)
{
	char		dir[MAXPGPATH];
	char		path[MAXPGPATH];
	char		seen[MAXPGPATH + 8];
	char		tmp[MAXPGPATH + 32];
	file_writer w;
	uint64_t	bytes = 0;
	tl_error	err;
	tl_code		rc;

	if (!tl_guc_model_files)
		return;
	model_dir(dir);
	model_file_path(path, key);
	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
	{
		elog(DEBUG1, "could not create directory \"%s\": %m", dir);
		return;
	}
	snprintf(seen, sizeof(seen), "%s.seen", path);
	remove_stale(dir, key, path, seen);
	if (access(seen, F_OK) != 0)
	{
		/* the first process to build this version: mark it, write nothing */
		int			fd = OpenTransientFilePerm(seen, O_WRONLY | O_CREAT | PG_BINARY, pg_file_create_mode);

		if (fd >= 0)
			CloseTransientFile(fd);
		elog(DEBUG1, "model " INT64_FORMAT " marked in \"%s\"", key->id, seen);
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, MyProcPid);
	w.path = tmp;
	w.fd = OpenTransientFilePerm(tmp, O_RDWR | O_CREAT | O_TRUNC | PG_BINARY, pg_file_create_mode);
	if (w.fd < 0)
	{
		elog(DEBUG1, "could not create model file \"%s\": %m", tmp);
		return;
	}
	tl_error_clear(&err);
	rc = tl_resnet_mapfile_write(net, write_at, &w, &bytes, &err);
	if (rc == TL_OK && ftruncate(w.fd, (off_t) bytes) != 0)
		rc = tl_fail(&err, TL_E_IO, "could not extend \"%s\": %s", tmp, strerror(errno));
	if (CloseTransientFile(w.fd) != 0 && rc == TL_OK)
		rc = tl_fail(&err, TL_E_IO, "could not close \"%s\": %s", tmp, strerror(errno));
	if (rc == TL_OK && rename(tmp, path) != 0)
		rc = tl_fail(&err, TL_E_IO, "could not rename \"%s\": %s", tmp, strerror(errno));
	if (rc != TL_OK)
	{
		(void) unlink(tmp);
		elog(DEBUG1, "model file not written: %s", err.message);
	}
	else
		elog(DEBUG1, "model " INT64_FORMAT " written to \"%s\"", key->id, path);
}
