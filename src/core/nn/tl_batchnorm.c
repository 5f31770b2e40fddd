/*
 * tl_batchnorm.c - BatchNorm2d over NHWC rows, with the following
 * residual add and ReLU fused into the same pass.
 *
 * Statistics are summed in double per thread and then combined, as PyTorch's
 * CPU kernels accumulate float in double; one pass computes sum and sum of
 * squares (exact enough in double for activations).  The normalisation is
 * applied as y = x * scale + shift with per-channel scale = gamma * invstd,
 * shift = beta - mean * scale.  Batch mean and inverse std are kept in double
 * for backward, whose sums run in float over 16-row blocks added in double.
 */
#include "tl_nn_internal.h"

#include <math.h>
#include <string.h>

typedef struct bn_job
{
	float	   *y;
	const float *x;
	const float *dy;
	const float *relu_out;
	float	   *dy_masked;
	const float *residual;
	const double *mean;
	double	   *partials;
	const double *scale;		/* per channel, doubles in partials */
	const double *shift;
	bool		relu;
	int			C;
} bn_job;

static void
stats_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	bn_job	   *j = p;
	const int	C = j->C;
	double	   *s = j->partials + (int64_t) chunk * 2 * C;
	double	   *ss = s + C;

	memset(s, 0, 2 * (size_t) C * sizeof(double));
	for (int64_t r = begin; r < end; r++)
	{
		const float *x = j->x + r * C;

		for (int c = 0; c < C; c++)
		{
			double		v = x[c];

			s[c] += v;
			ss[c] += v * v;
		}
	}
}

static void
transform_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	bn_job	   *j = p;
	const int	C = j->C;
	float		scale[TL_NN_MAX_CHANNELS],
				shift[TL_NN_MAX_CHANNELS];

	for (int c = 0; c < C; c++)
	{
		scale[c] = (float) j->scale[c];
		shift[c] = (float) j->shift[c];
	}
	for (int64_t r = begin; r < end; r++)
	{
		const float *x = j->x + r * C;
		float	   *y = j->y + r * C;

		if (j->residual)
		{
			const float *res = j->residual + r * C;

			for (int c = 0; c < C; c++)
			{
				float		v = x[c] * scale[c] + shift[c] + res[c];

				y[c] = j->relu ? (v > 0.0f ? v : 0.0f) : v;
			}
		}
		else if (j->relu)
		{
			for (int c = 0; c < C; c++)
			{
				float		v = x[c] * scale[c] + shift[c];

				y[c] = v > 0.0f ? v : 0.0f;
			}
		}
		else
			for (int c = 0; c < C; c++)
				y[c] = x[c] * scale[c] + shift[c];
	}
}

void
tl_bn_forward_train(float *y, const float *x, const float *gamma, const float *beta,
					float *running_mean, float *running_var,
					double *save_mean, double *save_invstd,
					const float *residual, bool relu,
					int64_t P, int C, float momentum, float eps, double *partials)
{
	bn_job		j = {0};
	int			nchunks;

	j.x = x;
	j.C = C;
	j.partials = partials;
	nchunks = tl_parallel_for(P, 64, stats_rows, &j);
	for (int c = 0; c < C; c++)
	{
		double		s = 0,
					ss = 0,
					mean,
					var,
					invstd;

		for (int t = 0; t < nchunks; t++)
		{
			s += partials[(int64_t) t * 2 * C + c];
			ss += partials[(int64_t) t * 2 * C + C + c];
		}
		mean = s / (double) P;
		var = ss / (double) P - mean * mean;
		if (var < 0)
			var = 0;
		invstd = 1.0 / sqrt(var + (double) eps);
		save_mean[c] = mean;
		save_invstd[c] = invstd;
		running_mean[c] = (float) ((1.0 - momentum) * running_mean[c] + momentum * mean);
		running_var[c] = (float) ((1.0 - momentum) * running_var[c]
								  + momentum * var * (double) P / (double) (P - 1));
		/* scale and shift reuse chunk 0's slots, which channel c no longer needs */
		partials[c] = (double) gamma[c] * invstd;
		partials[C + c] = (double) beta[c] - mean * partials[c];
	}
	j.y = y;
	j.residual = residual;
	j.relu = relu;
	j.scale = partials;
	j.shift = partials + C;
	tl_parallel_for(P, 64, transform_rows, &j);
}

void
tl_bn_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
				   const float *running_mean, const float *running_var,
				   const float *residual, bool relu, int64_t P, int C, float eps)
{
	double		coef[2 * TL_NN_MAX_CHANNELS];
	bn_job		j = {0};

	for (int c = 0; c < C; c++)
	{
		double		invstd = 1.0 / sqrt((double) running_var[c] + (double) eps);

		coef[c] = (double) gamma[c] * invstd;
		coef[C + c] = (double) beta[c] - (double) running_mean[c] * coef[c];
	}
	j.y = y;
	j.x = x;
	j.C = C;
	j.residual = residual;
	j.relu = relu;
	j.scale = coef;
	j.shift = coef + C;
	tl_parallel_for(P, 64, transform_rows, &j);
}

/*
 * Rows are summed in float over blocks of SUM_BLOCK rows (full-width vector
 * arithmetic), and the block sums are added in double: float rounding only
 * ever sees SUM_BLOCK terms.
 */
#define SUM_BLOCK 16

/* Pass 1 of backward: g = dy [masked by relu_out > 0]; sums of g and (x - mean) g. */
static void
backward_sums_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	bn_job	   *j = p;
	const int	C = j->C;
	double	   *restrict sg = j->partials + (int64_t) chunk * 2 * C;
	double	   *restrict sxg = sg + C;
	float		mean[TL_NN_MAX_CHANNELS],
				bg[TL_NN_MAX_CHANNELS],
				bxg[TL_NN_MAX_CHANNELS];

	memset(sg, 0, 2 * (size_t) C * sizeof(double));
	for (int c = 0; c < C; c++)
		mean[c] = (float) j->mean[c];
	for (int64_t r0 = begin; r0 < end; r0 += SUM_BLOCK)
	{
		int64_t		r1 = r0 + SUM_BLOCK < end ? r0 + SUM_BLOCK : end;

		memset(bg, 0, (size_t) C * sizeof(float));
		memset(bxg, 0, (size_t) C * sizeof(float));
		for (int64_t r = r0; r < r1; r++)
		{
			const float *restrict x = j->x + r * C;
			const float *restrict dy = j->dy + r * C;

			if (j->relu_out)
			{
				const float *restrict o = j->relu_out + r * C;

				if (j->dy_masked)
				{
					float	   *restrict m = j->dy_masked + r * C;

					for (int c = 0; c < C; c++)
					{
						float		g = o[c] > 0.0f ? dy[c] : 0.0f;

						m[c] = g;
						bg[c] += g;
						bxg[c] += (x[c] - mean[c]) * g;
					}
				}
				else
					for (int c = 0; c < C; c++)
					{
						float		g = o[c] > 0.0f ? dy[c] : 0.0f;

						bg[c] += g;
						bxg[c] += (x[c] - mean[c]) * g;
					}
			}
			else
				for (int c = 0; c < C; c++)
				{
					bg[c] += dy[c];
					bxg[c] += (x[c] - mean[c]) * dy[c];
				}
		}
		for (int c = 0; c < C; c++)
		{
			sg[c] += bg[c];
			sxg[c] += bxg[c];
		}
	}
}

/* Pass 2: dx = (g - mean(g) - (x - mean) * k) * invstd * gamma. */
static void
backward_dx_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	bn_job	   *j = p;
	const int	C = j->C;
	float		a[TL_NN_MAX_CHANNELS],
				k[TL_NN_MAX_CHANNELS],
				mg[TL_NN_MAX_CHANNELS],
				mean[TL_NN_MAX_CHANNELS];

	for (int c = 0; c < C; c++)
	{
		a[c] = (float) j->scale[c];
		k[c] = (float) j->scale[C + c];
		mg[c] = (float) j->shift[c];
		mean[c] = (float) j->shift[C + c];
	}
	for (int64_t r = begin; r < end; r++)
	{
		const float *restrict x = j->x + r * C;
		const float *restrict dy = j->dy + r * C;
		float	   *dx = j->y + r * C;

		if (j->relu_out)
		{
			const float *restrict o = j->relu_out + r * C;

			for (int c = 0; c < C; c++)
			{
				float		g = o[c] > 0.0f ? dy[c] : 0.0f;

				dx[c] = (g - mg[c] - (x[c] - mean[c]) * k[c]) * a[c];
			}
		}
		else
			for (int c = 0; c < C; c++)
				dx[c] = (dy[c] - mg[c] - (x[c] - mean[c]) * k[c]) * a[c];
	}
}

void
tl_bn_backward(float *dx, float *dgamma, float *dbeta, float *dy_masked,
			   const float *dy, const float *relu_out, const float *x,
			   const float *gamma, const double *save_mean, const double *save_invstd,
			   int64_t P, int C, double *partials)
{
	bn_job		j = {0};
	int			nchunks;
	double		coef[4 * TL_NN_MAX_CHANNELS];

	j.x = x;
	j.dy = dy;
	j.relu_out = relu_out;
	j.dy_masked = dy_masked;
	j.mean = save_mean;
	j.C = C;
	j.partials = partials;
	nchunks = tl_parallel_for(P, 64, backward_sums_rows, &j);
	for (int c = 0; c < C; c++)
	{
		double		sg = 0,
					sxg = 0,
					invstd = save_invstd[c],
					mean = save_mean[c],
					k,
					a;

		for (int t = 0; t < nchunks; t++)
		{
			sg += partials[(int64_t) t * 2 * C + c];
			sxg += partials[(int64_t) t * 2 * C + C + c];
		}
		if (dgamma)
			dgamma[c] = (float) (sxg * invstd);
		if (dbeta)
			dbeta[c] = (float) sg;

		/* PyTorch's form: k = sum((x - mean) g) * invstd^2 / P */
		k = sxg * invstd * invstd / (double) P;
		a = invstd * (double) gamma[c];
		coef[c] = a;
		coef[C + c] = k;
		coef[2 * C + c] = sg / (double) P;
		coef[3 * C + c] = mean;
	}
	j.y = dx;
	/* with the mask stored, pass 2 reads the masked gradient directly */
	if (dy_masked)
	{
		j.dy = dy_masked;
		j.relu_out = NULL;
	}
	j.scale = coef;
	j.shift = coef + 2 * C;
	tl_parallel_for(P, 64, backward_dx_rows, &j);
}
