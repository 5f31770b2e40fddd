/*
 * transfer.c - module entry point: PG_MODULE_MAGIC and the extension's
 * settings.  Each concern's SQL functions live in their own file.
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "image/tl_image.h"
#include "nn/tl_resnet.h"
#include "transfer_pg.h"

PG_MODULE_MAGIC;

/* Settings, defined here so there is one list of them. */
int			tl_guc_max_image_pixels = (int) TL_DEFAULT_MAX_PIXELS;
int			tl_guc_blas_threads = 1;
int			tl_guc_predict_threads = 0;
int			tl_guc_max_image_file_size = 64 * 1024;	/* kB */
int			tl_guc_model_cache_size = 2;
int			tl_guc_train_threads = 2;
int			tl_guc_train_memory_limit = 4096;
int			tl_guc_conv_algorithm = TL_CONV_WINOGRAD;
static int	tl_guc_thread_spin_us = TL_DEFAULT_SPIN_US;
static bool tl_guc_huge_pages = false;
bool		tl_guc_model_files = true;

static const struct config_enum_entry conv_algorithm_options[] = {
	{"winograd", TL_CONV_WINOGRAD, false},
	{"im2col", TL_CONV_IM2COL, false},
	{NULL, 0, false}
};

static void
assign_blas_threads(int newval, void *extra)
{
	tl_set_num_threads(newval);
}

static void
assign_thread_spin(int newval, void *extra)
{
	tl_set_spin_us(newval);
}

static void
assign_huge_pages(bool newval, void *extra)
{
	tl_set_huge_pages(newval);
}

static void
assign_conv_algorithm(int newval, void *extra)
{
	tl_set_conv_algorithm((tl_conv_algorithm) newval);
}

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("transfer.max_image_pixels",
							"Largest image (width * height) that will be decoded.",
							"Checked from the image header before any large allocation. "
							"The default is Pillow's MAX_IMAGE_PIXELS.  Only superusers (or roles "
							"granted SET on it) change it: it guards the server's memory.  It "
							"cannot exceed the decoders' hard cap of 1 GiB of decoded pixels.",
							&tl_guc_max_image_pixels,
							(int) TL_DEFAULT_MAX_PIXELS, 1, (int) TL_HARD_MAX_PIXELS,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("transfer.max_image_file_size",
							"Largest image file that tl_import_folder and load-folder.sh import, and that tl_train and tl_evaluate use from a table.",
							"Larger files are skipped with a warning or a notice.  Only superusers (or roles "
							"granted SET on it) change it.",
							&tl_guc_max_image_file_size,
							64 * 1024, 1, (int) ((MaxAllocSize - VARHDRSZ) / 1024),
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);

	DefineCustomIntVariable("transfer.blas_threads",
							"Compute threads used by this process for prediction, when above 1 and transfer.predict_threads is 0.",
							"Kept for compatibility: transfer.predict_threads (default 0, automatic) "
							"decides otherwise; training workers use transfer.train_threads.",
							&tl_guc_blas_threads,
							1, 1, 64,
							PGC_USERSET, 0, NULL, assign_blas_threads, NULL);

	DefineCustomIntVariable("transfer.predict_threads",
							"Compute threads of one prediction call (tl_predict and friends, tl_evaluate).",
							"0 (the default) chooses: the number of CPUs this process may run on, "
							"at most 4, in a query without parallel workers; 1 in parallel workers "
							"and in the leader of a parallel query, so workers times threads stay "
							"within the cores.  A positive value is used as is everywhere.",
							&tl_guc_predict_threads,
							0, 0, 64,
							PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("transfer.thread_spin_us",
							"Microseconds an idle compute thread spins before it sleeps.",
							"The compute threads of a prediction or training run hand work to "
							"each other many times per image; spinning briefly saves waking a "
							"sleeping thread each time.  Set 0 on a host whose cores are all "
							"busy with other work, where a spinning thread only takes time from them.",
							&tl_guc_thread_spin_us,
							TL_DEFAULT_SPIN_US, 0, 10000,
							PGC_USERSET, 0, NULL, assign_thread_spin, NULL);

	DefineCustomBoolVariable("transfer.model_files",
							 "Whether processes share loaded models through files in the temporary-files directory.",
							 "The first process to load a model for prediction writes it, built, to "
							 "base/pgsql_tmp (about 120 MB per model, at most 8 files); later processes "
							 "map that file instead of building their own.  Removed when the server starts.",
							 &tl_guc_model_files,
							 true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("transfer.huge_pages",
							 "Whether the networks' large buffers are advised onto transparent huge pages.",
							 "Fewer page faults, but on a virtual machine that returns free memory to its "
							 "host a fresh 2 MB page can cost several times what 4 kB pages do "
							 "(docs/performance.md).  Applies to buffers allocated after the change, "
							 "in every process, training workers included.",
							 &tl_guc_huge_pages,
							 false,
							 PGC_SIGHUP, 0, NULL, assign_huge_pages, NULL);

	DefineCustomIntVariable("transfer.model_cache_size",
							"Models each process keeps loaded for prediction.",
							"Least recently used models are freed first. A 224-pixel "
							"ResNet-18 takes about 140 MB (weights, Winograd-transformed weights, activations).",
							&tl_guc_model_cache_size,
							2, 1, 64,
							PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("transfer.train_threads",
							"Compute threads of a training worker.",
							"tl_train records the value of the calling session in the run; "
							"a run is reproducible for the same seed, data and thread count.",
							&tl_guc_train_threads,
							2, 1, 64,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("transfer.train_memory_limit",
							"Largest estimated memory a training run may use.",
							"tl_train rejects a run whose estimate (compressed images, weights, "
							"activations) is larger, and its worker stops when the data it reads "
							"turns out larger.  0 disables both checks.",
							&tl_guc_train_memory_limit,
							4096, 0, INT_MAX / 2,
							PGC_SUSET, GUC_UNIT_MB, NULL, NULL, NULL);

	DefineCustomEnumVariable("transfer.conv_algorithm",
							 "How 3x3 stride-1 convolutions are computed: winograd or im2col.",
							 "winograd (Winograd F(2x2,3x3)) needs 2.25 times fewer multiplies "
							 "and rounds slightly differently from im2col (plain GEMMs); both stay "
							 "within the PyTorch parity tolerances.  tl_train records the value "
							 "of the calling session in the run.",
							 &tl_guc_conv_algorithm,
							 TL_CONV_WINOGRAD, conv_algorithm_options,
							 PGC_USERSET, 0, NULL, assign_conv_algorithm, NULL);

	tl_debug_pause_define_guc();
	tl_start_wait_define_guc();

	MarkGUCPrefixReserved("transfer");

	tl_parallel_plan_install();
}
