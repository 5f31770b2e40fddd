/* transfer_pg.h - shared declarations of the PostgreSQL layer. */
#ifndef TRANSFER_PG_H
#define TRANSFER_PG_H

/* Settings (transfer.c). */
extern int	tl_guc_max_image_pixels;
extern int	tl_guc_blas_threads;
extern int	tl_guc_predict_threads;	/* 0 = auto (predict_threads.c) */
extern int	tl_guc_max_image_file_size;	/* kB */
extern int	tl_guc_model_cache_size;
extern int	tl_guc_train_threads;
extern int	tl_guc_train_memory_limit;	/* MB, 0 = no limit */
extern int	tl_guc_conv_algorithm;	/* tl_conv_algorithm */
extern bool tl_guc_model_files;	/* model_file.c */

/* train/debug_pause.c: defines transfer.debug_pause_at (for tests only) */
extern void tl_debug_pause_define_guc(void);
/* train/start_wait.c: defines transfer.train_start_timeout */
extern void tl_start_wait_define_guc(void);
/* parallel_plan.c: the planner hook that offers prediction scans parallel plans */
extern void tl_parallel_plan_install(void);

#endif
