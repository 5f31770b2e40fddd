/*
 * tl_resnet.h - torchvision's ResNet-18 on the CPU: forward, backward,
 * BatchNorm, softmax cross-entropy, SGD with momentum and StepLR.
 *
 * Layout: activations are NHWC fp32 (batch x spatial is the large GEMM
 * dimension); the input is (N, H, W, 3) as tl_transform_* produce it.
 * Parameters and buffers carry torchvision's state_dict keys and shapes
 * (conv weights (out, in, kh, kw) as PyTorch stores them).
 *
 * OWNER: engine (issue 3).  This is the contract the PostgreSQL layer uses;
 * extend it, but keep these entry points and their meaning.
 */
#ifndef TL_RESNET_H
#define TL_RESNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_error.h"
#include "tl_rng.h"
#include "tl_tensor.h"

typedef struct tl_resnet_config
{
	int			num_classes;	/* fc outputs, >= 1 */
	int			base_width;		/* 64 in torchvision; smaller for test fixtures */
} tl_resnet_config;

typedef enum tl_train_mode
{
	TL_MODE_FINETUNE = 0,		/* every parameter is trained */
	TL_MODE_FEATURE_EXTRACTOR	/* only fc is trained; BN still in train mode */
} tl_train_mode;

typedef struct tl_resnet tl_resnet;

/* Result of a batch: mean cross-entropy loss, correct count, argmax per row. */
typedef struct tl_batch_result
{
	double		loss;
	int			correct;
	int32_t    *preds;			/* caller-provided array of n, or NULL */
} tl_batch_result;

/*
 * The classifier head's kernels, public for callers that train fc alone on
 * cached backbone features (the PostgreSQL layer's cache_features runs).
 */
/*
 * Softmax cross-entropy averaged over n rows (labels already validated).
 * Returns the mean loss; dlogits (if not NULL) = (softmax - onehot) / n.
 */
double		tl_softmax_xent(const float *logits, const int32_t *labels, int n, int classes,
							float *dlogits);
/* y (n x out) = x (n x in) * W^T + b, W (out x in) as PyTorch stores it. */
void		tl_linear_forward(float *y, const float *x, const float *w, const float *b,
							  int n, int in, int out);
/* dw, db overwritten (skipped if NULL); dx overwritten (skipped if NULL). */
void		tl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
							   const float *w, int n, int in, int out);

/* Process-wide compute threads: the core's pool runs every kernel, GEMMs included. */
void		tl_set_num_threads(int n);
int			tl_get_num_threads(void);
/*
 * Whether the network's large buffers allocated from now on are advised
 * onto transparent huge pages (tl_memory.c says when that pays); default
 * off.  Set it from one thread, before planning.
 */
void		tl_set_huge_pages(bool on);
bool		tl_get_huge_pages(void);
/* CPUs this process may run on (its affinity mask: cpusets, taskset), at least 1. */
int			tl_usable_cpus(void);
/*
 * How long (microseconds) an idle pool thread, and a caller waiting for the
 * pool, spin before they sleep on a condition variable; 0: never.  Spinning
 * saves the wake-up of a sleeping thread between the many short parallel
 * loops of a forward pass; it costs CPU time on a host with no idle core.
 */
#define TL_DEFAULT_SPIN_US 100
void		tl_set_spin_us(int us);

/* fn(ctx, begin, end, chunk): one contiguous slice of [0, n), chunk < tl_get_num_threads(). */
typedef void (*tl_range_fn) (void *ctx, int64_t begin, int64_t end, int chunk);

/*
 * Split [0, n) into at most tl_get_num_threads() slices of at least `grain`
 * items and run them on the pool (the caller runs slice 0).  Returns when all
 * are done and returns the number of slices used (their chunk ids are
 * 0 .. result-1).  Call BLAS from fn only through tl_gemm.c (OpenBLAS is pinned to one
 * thread).
 */
int			tl_parallel_for(int64_t n, int64_t grain, tl_range_fn fn, void *ctx);


/*
 * Process-wide algorithm of the 3x3 stride-1 convolutions (the others always
 * use im2col).  Winograd F(2x2, 3x3), the default, needs 2.25x fewer
 * multiplies and rounds differently from im2col, within the parity
 * tolerances (docs/engine.md); im2col is the plain GEMM formulation.  A
 * network picks up a change at its next forward.
 */
typedef enum tl_conv_algorithm
{
	TL_CONV_WINOGRAD = 0,
	TL_CONV_IM2COL
} tl_conv_algorithm;
void		tl_set_conv_algorithm(tl_conv_algorithm algo);
tl_conv_algorithm tl_get_conv_algorithm(void);

tl_resnet  *tl_resnet_new(const tl_resnet_config *cfg, tl_error *err);
void		tl_resnet_free(tl_resnet *net);
const tl_resnet_config *tl_resnet_get_config(const tl_resnet *net);

/* torchvision's initialisation: kaiming_normal_(fan_out) convs, BN 1/0, Linear default. */
void		tl_resnet_init_random(tl_resnet *net, tl_rng *rng);
/* A new fc as torch.nn.Linear initialises it: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias. */
void		tl_resnet_init_fc(tl_resnet *net, tl_rng *rng);

/*
 * Infer (num_classes, base_width) from a state dict and validate it strictly
 * like load_state_dict(strict=True): every key present with the right shape,
 * no unexpected key (num_batches_tracked accepted and ignored).  The error
 * names the first missing, unexpected or mis-shaped key.
 */
tl_code		tl_resnet_check_state_dict(const tl_state_dict *sd, tl_resnet_config *cfg,
									   tl_error *err);

#define TL_LOAD_SKIP_FC 0x1		/* load the backbone only; fc.* is ignored */
tl_code		tl_resnet_load_state_dict(tl_resnet *net, const tl_state_dict *sd,
									  unsigned flags, tl_error *err);
/*
 * The checks of tl_resnet_load_state_dict alone (keys and shapes against
 * net, as strict; tensor data is not read and may be NULL), for callers that
 * then copy each tensor into tl_resnet_param() themselves.
 */
tl_code		tl_resnet_validate_state_dict(const tl_resnet *net, const tl_state_dict *sd,
										  unsigned flags, tl_error *err);
/* A copy of every parameter and buffer, in torchvision's key order. */
tl_state_dict *tl_resnet_state_dict(const tl_resnet *net, tl_error *err);
/*
 * The same keys and shapes, with data copied only where copy(key) is true
 * (NULL: everywhere); the other tensors' data is NULL.  For a caller that
 * reads those from the network itself (training's best weights).
 */
tl_state_dict *tl_resnet_state_dict_some(const tl_resnet *net, bool (*copy) (const char *key),
										 tl_error *err);

/*
 * A network's eval-ready state as a file that processes map instead of each
 * building its own (tl_resnet_mapfile.c): a header, the parameters and the
 * kernels' weights for eval forwards under the current convolution
 * algorithm, at page-aligned offsets.  Only the kernels' weights in use are
 * written; the rest of their regions are holes.
 *
 * tl_resnet_mapfile_write builds those weights if stale and passes the
 * file's pieces to write(ctx, buf, bytes, offset); *file_bytes gets the
 * file's length (the caller extends the file to it).
 *
 * tl_resnet_mapfile_open checks a mapped file's header against the layout
 * its configuration implies (any inconsistency: TL_E_CORRUPT, nothing
 * taken) and returns a network whose buffers are the mapping; tl_resnet_free
 * calls release(base, bytes) instead of freeing them.  The mapping must be
 * writable and private (MAP_PRIVATE): the network may write to it like to
 * its own memory (training, another algorithm), and such writes must never
 * reach the file.  The network still needs a plan.
 */
typedef tl_code (*tl_mapfile_write_fn) (void *ctx, const void *buf, size_t bytes,
										 uint64_t offset, tl_error *err);
tl_code		tl_resnet_mapfile_write(tl_resnet *net, tl_mapfile_write_fn write, void *ctx,
									uint64_t *file_bytes, tl_error *err);
tl_resnet  *tl_resnet_mapfile_open(void *base, size_t bytes,
								   void (*release) (void *base, size_t bytes), tl_error *err);

/* Direct views by key (NULL if unknown / no gradient), for tests and tools. */
float	   *tl_resnet_param(tl_resnet *net, const char *key, int64_t *numel);
const float *tl_resnet_grad(const tl_resnet *net, const char *key, int64_t *numel);

/*
 * Plan activations, gradients and workspaces once for a batch size and input
 * size; nothing is allocated inside steps afterwards.  Re-planning for a
 * different shape is allowed.  Mode decides which gradients exist.
 */
tl_code		tl_resnet_plan(tl_resnet *net, int max_batch, int height, int width,
						   tl_train_mode mode, tl_error *err);
/* Bytes the network holds once planned: activations, gradients, workspaces, parameters. */
size_t		tl_resnet_planned_bytes(const tl_resnet *net);

/* The pieces of a step, exposed for parity tests. */
tl_code		tl_resnet_forward(tl_resnet *net, const float *x, int n, bool train, tl_error *err);
const float *tl_resnet_logits(const tl_resnet *net);	/* n x num_classes */
tl_code		tl_resnet_loss(tl_resnet *net, const int32_t *labels, int n,
						   tl_batch_result *res, tl_error *err);
/* Backward of the last forward(train=true) + loss; fills gradients (overwrites). */
tl_code		tl_resnet_backward(tl_resnet *net, tl_error *err);

/* torch.optim.SGD: momentum buffer starts as the first gradient. */
typedef struct tl_sgd_config
{
	double		lr;
	double		momentum;
	double		dampening;
	double		weight_decay;
	bool		nesterov;
} tl_sgd_config;

typedef struct tl_sgd tl_sgd;

tl_sgd	   *tl_sgd_new(tl_resnet *net, const tl_sgd_config *cfg, tl_error *err);
void		tl_sgd_free(tl_sgd *opt);
void		tl_sgd_set_lr(tl_sgd *opt, double lr);
tl_code		tl_sgd_step(tl_sgd *opt, tl_error *err);
/* Momentum buffers keyed by parameter key (for checkpoints and resume). */
tl_state_dict *tl_sgd_state_dict(const tl_sgd *opt, tl_error *err);
tl_code		tl_sgd_load_state_dict(tl_sgd *opt, const tl_state_dict *sd, tl_error *err);

/* StepLR: the lr epoch e (0-based) trains with: base_lr * gamma^floor(e / step_size). */
double		tl_steplr_lr(double base_lr, double gamma, int step_size, int epoch);

/* forward(train) + loss + backward + SGD step. */
tl_code		tl_resnet_train_step(tl_resnet *net, tl_sgd *opt, const float *x,
								 const int32_t *labels, int n, tl_batch_result *res,
								 tl_error *err);
/* forward(eval) + loss; no gradients. */
tl_code		tl_resnet_eval_step(tl_resnet *net, const float *x, const int32_t *labels,
								int n, tl_batch_result *res, tl_error *err);
/* forward(eval) + softmax: probs is n x num_classes. */
tl_code		tl_resnet_predict(tl_resnet *net, const float *x, int n, float *probs,
							  tl_error *err);
/* forward(eval) up to the global average pool: feats is n x (8 * base_width). */
tl_code		tl_resnet_features(tl_resnet *net, const float *x, int n, float *feats,
							   tl_error *err);

#endif
