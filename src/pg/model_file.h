/*
 * model_file.h - loaded models shared between processes as mapped files
 * (model_file.c).
 */
#ifndef TL_MODEL_FILE_H
#define TL_MODEL_FILE_H

#include "postgres.h"

#include "storage/itemptr.h"

#include "nn/tl_resnet.h"

/* Everything a model's built network depends on: its row versions, the algorithm. */
typedef struct tl_model_file_key
{
	Oid			database;
	int64		id;
	TransactionId xmin;
	ItemPointerData ctid;
	int64		tensors_version;
	tl_conv_algorithm algo;
} tl_model_file_key;

/*
 * The network of key mapped from its file, or NULL when there is none (or
 * it is unusable: it is then removed, and the caller loads from the tables).
 */
extern tl_resnet *tl_model_file_open(const tl_model_file_key *key);

/*
 * net was just built for key: the first time in any process, mark the
 * version; the next time, write net's file for later processes to map.
 * Best effort: a failure (disk full, say) is logged at DEBUG1 and leaves
 * no file.
 */
extern void tl_model_file_save(const tl_model_file_key *key, tl_resnet *net);

#endif
