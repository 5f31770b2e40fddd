/*
 * predict_threads.h - the compute threads of a prediction call
 * (transfer.predict_threads; predict_threads.c).
 */
#ifndef TL_PREDICT_THREADS_H
#define TL_PREDICT_THREADS_H

/* Threads the next prediction in this process uses (see predict_threads.c). */
extern int	tl_predict_thread_count(void);
/* Set the core's thread count to tl_predict_thread_count(). */
extern void tl_predict_use_threads(void);

#endif
