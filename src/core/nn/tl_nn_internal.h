/*
 * tl_nn_internal.h - the engine's layer kernels and its small thread pool (internal).
 *
 * One forward/backward pair per layer with flat float pointers and explicit
 * sizes.  Activations are NHWC: a tensor of P = n*h*w rows of c contiguous
 * channels.  Kernels never allocate; callers pass planned workspaces.
 * Backward functions overwrite parameter gradients; input gradients are
 * written or, where a flag says so, accumulated (residual branches).
 *
 * OWNER: engine (issue 3).  Not a contract for other modules.
 */
#ifndef TL_NN_INTERNAL_H
#define TL_NN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_resnet.h"

/* Channel count limit of the BN and pooling kernels (per-channel coefficients live on the stack). */
#define TL_NN_MAX_CHANNELS 2048

/* ---- thread pool (tl_parallel.c; tl_parallel_for is public, in tl_resnet.h) ---- */

#define TL_MAX_THREADS 64

/*
 * The grain for tl_parallel_for that splits n items into as many slices as
 * the threads allow but at most max_slices (a caller with that many
 * per-slice buffers).  The grain is a minimum per slice, so ceil(n / max)
 * is too coarse: 7 items in at most 2 slices with a grain of 4 run as one
 * slice of 7.
 */
static inline int64_t
tl_grain_for_slices(int64_t n, int64_t max_slices)
{
	if (max_slices >= tl_get_num_threads())
		return 1;
	return max_slices < 1 ? n : n / (max_slices + 1) + 1;
}

/* Keep OpenBLAS on the calling thread (once per process; cheap to repeat). */
void		tl_blas_single_threaded(void);

/* ---- large buffers (tl_memory.c) ---- */

/* 64-byte aligned (on huge pages when large and tl_set_huge_pages says so); NULL if out of memory; free() it. */
void	   *tl_alloc_large(size_t bytes);
/*
 * Zero bytes at p on the compute threads.  For fresh memory the page
 * faults (the kernel zeroing pages) cost far more than the stores, and
 * they run in parallel: a new network's 45 MB of weights, or a finetune
 * plan's gradients, fault in about half the time.
 */
void		tl_zero_parallel(void *p, size_t bytes);

/*
 * C (M x N) = A (M x K) * B (K x N), row-major, overwriting C, single
 * threaded, A and B read in place: tl_sgemm(false, false, ..., false, ...).
 */
void		tl_sgemm_nn(int M, int N, int K, const float *A, int64_t lda, const float *B,
						int64_t ldb, float *C, int64_t ldc);

/*
 * C (M x N) = op(A) * op(B), or C += op(A) * op(B) when accumulate;
 * op(A) is M x K (A stored K x M when trans_a), op(B) is K x N (B stored
 * N x K when trans_b); row-major, single threaded (tl_gemm.c).  Each
 * element is one sum over k in increasing order, so results do not depend on
 * how a caller splits rows or columns.  A transposed B is packed a K x 32
 * panel at a time into a per-thread buffer (grown to the largest K seen,
 * freed when the thread exits).
 */
void		tl_sgemm(bool trans_a, bool trans_b, int M, int N, int K, const float *A,
					 int64_t lda, const float *B, int64_t ldb, bool accumulate, float *C,
					 int64_t ldc);

/* ---- convolution (tl_conv.c): PyTorch Conv2d without bias ---- */

typedef struct tl_conv_shape
{
	int			n,
				h,
				w,
				c;				/* input NHWC */
	int			oc,
				k,
				stride,
				pad;			/* square kernel k x k */
	int			oh,
				ow;				/* output spatial size */
} tl_conv_shape;

/* Output size for input size `in`: floor((in + 2 pad - k) / stride) + 1. */
int			tl_conv_out_size(int in, int k, int stride, int pad);
/* Floats of the cols workspace a conv needs: n*oh*ow * c*k*k (0 if none). */
int64_t		tl_conv_workspace(const tl_conv_shape *s);

/*
 * Weights of the kernels below are "packed": (oc, kh, kw, c), matching cols
 * rows ordered (kh, kw, c).  These convert from PyTorch's (oc, c, kh, kw) and
 * back (for weight gradients); for k = 1 both layouts are the same.
 */
void		tl_conv_pack_weights(float *wp, const float *w, int oc, int c, int k);
void		tl_conv_unpack_grad(float *dw, const float *dwp, int oc, int c, int k);

/* y (n*oh*ow x oc) = cols(x) * Wp^T, Wp packed (oc x k*k*c). */
void		tl_conv_forward(float *y, const float *x, const float *w, float *ws,
							const tl_conv_shape *s);
/*
 * The same, its GEMMs split into `parts` slices (rows, or output columns for
 * small n*oh*ow) run on the pool whatever the thread count: OpenBLAS (which
 * tl_sgemm calls in a build without AVX-512) rounds differently for
 * different GEMM shapes, so a fixed split gives bitwise the same y with any
 * number of threads.  tl_conv_forward splits by the thread count.
 */
void		tl_conv_forward_parts(float *y, const float *x, const float *w, float *ws,
								  const tl_conv_shape *s, int parts);
/*
 * Eval forward of a k > 1 conv with the weights in the transposed packed
 * layout (kh, kw, c, oc) (tl_conv_pack_weights_t): im2col + tl_sgemm_nn, so
 * y is bitwise the same with any number of threads.
 */
void		tl_conv_pack_weights_t(float *wt, const float *w, int oc, int c, int k);
void		tl_conv_forward_eval(float *y, const float *x, const float *wt, float *ws,
								 const tl_conv_shape *s);

/*
 * The weight gradient sums n*oh*ow products per element.  With P large it is
 * split over threads by rows: each thread builds its cols block by block
 * (cache-resident), multiplies into a float partial (wtmp) and flushes that
 * into its double accumulator (wacc) every TL_WGRAD_CHUNK rows; the threads'
 * accumulators are then added in double.  With P small it is split by output
 * channel, and past TL_WGRAD_CHUNK rows chunks are likewise added in double,
 * so no float sum runs over more than TL_WGRAD_CHUNK rows (conv1 at 224x224,
 * batch 4, sums 50k).
 * tl_conv_wgrad_workspace(s, parts) is the floats of wtmp and the doubles of
 * wacc that `parts` threads need (0: none).
 */
#define TL_WGRAD_CHUNK 4096
int64_t		tl_conv_wgrad_workspace(const tl_conv_shape *s, int parts);

/*
 * dw (oc, kh, kw, c packed) = dy^T * cols(x)   (overwritten; skipped if NULL)
 * dx = col2im(dy * W)                 (skipped if dx is NULL; accumulated into
 *                                      dx when accumulate, else overwritten)
 * wtmp/wacc hold tl_conv_wgrad_workspace(s, parts) elements (or are NULL);
 * at most `parts` threads then share the weight gradient by rows.
 */
void		tl_conv_backward(float *dx, float *dw, const float *dy, const float *x,
							 const float *w, float *ws, float *wtmp, double *wacc, int parts,
							 const tl_conv_shape *s, bool accumulate);

void		tl_im2col(const float *x, float *cols, const tl_conv_shape *s);

/*
 * ---- 3x3 stride-1 pad-1 convolution as Winograd F(2x2, 3x3) (tl_winograd.c) ----
 * The same results as tl_conv_forward/backward up to rounding, with 2.25x
 * fewer GEMM FLOPs.  Weights are transformed once per weight update:
 * u holds 16 * c * oc floats.  Workspace floats: tl_winograd_workspace
 * (backward = true for tl_winograd_backward); wtmp/wacc (floats/doubles) as
 * tl_winograd_wgrad_workspace(s, parts) says (0: none needed).
 */
bool		tl_winograd_applies(const tl_conv_shape *s);
int64_t		tl_winograd_tiles(const tl_conv_shape *s);
int64_t		tl_winograd_workspace(const tl_conv_shape *s, bool backward);
int64_t		tl_winograd_wgrad_workspace(const tl_conv_shape *s, int parts);
/* u [16][c][oc] from w (oc, c, 3, 3), PyTorch's layout. */
void		tl_winograd_weights(float *u, const float *w, int oc, int c);
void		tl_winograd_forward(float *y, const float *x, const float *u, float *ws,
								const tl_conv_shape *s);
/* The same for eval forwards: the GEMMs by tl_sgemm_nn (no packing of u). */
void		tl_winograd_forward_eval(float *y, const float *x, const float *u, float *ws,
									 const tl_conv_shape *s);
/*
 * dw (oc, c, 3, 3) in PyTorch's layout, overwritten (skipped if NULL); dx
 * written or accumulated like tl_conv_backward (skipped if NULL).
 */
void		tl_winograd_backward(float *dx, float *dw, const float *dy, const float *x,
								 const float *u, float *ws, float *wtmp, double *wacc, int parts,
								 const tl_conv_shape *s, bool accumulate);
void		tl_col2im(const float *cols, float *dx, const tl_conv_shape *s, bool accumulate);

/* ---- BatchNorm2d (tl_batchnorm.c), over P rows of C channels ---- */

/* Per-thread partial sums a BN pass needs: doubles. */
#define TL_BN_PARTIALS(C) ((int64_t) TL_MAX_THREADS * 2 * (C))

/*
 * Train mode: batch statistics (biased variance for normalising), running
 * statistics updated with momentum using the unbiased variance, then
 * y = [relu](x_hat * gamma + beta [+ residual]).  save_mean/save_invstd keep
 * what backward needs.  y may alias residual, not x.  Needs P >= 2.
 */
void		tl_bn_forward_train(float *y, const float *x, const float *gamma, const float *beta,
								float *running_mean, float *running_var,
								double *save_mean, double *save_invstd,
								const float *residual, bool relu,
								int64_t P, int C, float momentum, float eps, double *partials);

/* Eval mode: running statistics. */
void		tl_bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
							   const float *running_mean, const float *running_var,
							   const float *residual, bool relu, int64_t P, int C, float eps);

/*
 * Backward of train mode.  If relu_out is not NULL the incoming gradient is
 * first masked by relu_out > 0 (the fused ReLU after this BN) and, if
 * dy_masked is not NULL, the masked gradient is also stored there (the
 * residual branch needs it).  dx may alias dy.  dgamma/dbeta are overwritten
 * (skipped if NULL).
 */
void		tl_bn_backward(float *dx, float *dgamma, float *dbeta, float *dy_masked,
						   const float *dy, const float *relu_out, const float *x,
						   const float *gamma, const double *save_mean, const double *save_invstd,
						   int64_t P, int C, double *partials);

/* ---- elementwise, pooling, loss (tl_layers.c; Linear and the loss are public, in tl_resnet.h) ---- */

/* dx = dy where out > 0, else 0 (dx may alias dy). */
void		tl_relu_backward(float *dx, const float *dy, const float *out, int64_t count);

/* MaxPool2d(k, stride, pad) NHWC; argmax holds the input offset (ih*w + iw) per output. */
void		tl_maxpool_forward(float *y, int32_t *argmax, const float *x, int n, int h, int w,
							   int c, int k, int stride, int pad, int oh, int ow);
/* dx (overwritten) from dy and the argmax of forward. */
void		tl_maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int n, int h,
								int w, int c, int k, int stride, int pad, int oh, int ow);

/* Global average pool: y (n x c) = mean over hw rows of x. */
void		tl_avgpool_forward(float *y, const float *x, int n, int hw, int c);
void		tl_avgpool_backward(float *dx, const float *dy, int n, int hw, int c);

/* probs = softmax(logits) row-wise. */
void		tl_softmax(float *probs, const float *logits, int n, int classes);

#endif
