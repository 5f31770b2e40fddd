/*
 * train/plot.c - tl_plot(run): an SVG of a run's train and val loss and
 * accuracy per epoch, the picture a user would otherwise draw from the
 * tutorial's log.  Two charts side by side (loss, accuracy), each with axes,
 * ticks and a legend; hand-written SVG, no external dependency.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "train.h"

PG_FUNCTION_INFO_V1(tl_plot);

#define CHART_W 360
#define CHART_H 260
#define MARGIN_L 52
#define MARGIN_R 16
#define MARGIN_T 40
#define MARGIN_B 44

typedef struct series
{
	int			n;
	int		   *epoch;
	double	   *loss;
	double	   *acc;
} series;

static void
xml_escape(StringInfo s, const char *text)
{
	for (const char *c = text; *c; c++)
	{
		switch (*c)
		{
			case '<':
				appendStringInfoString(s, "&lt;");
				break;
			case '>':
				appendStringInfoString(s, "&gt;");
				break;
			case '&':
				appendStringInfoString(s, "&amp;");
				break;
			case '"':
				appendStringInfoString(s, "&quot;");
				break;
			default:
				appendStringInfoChar(s, *c);
		}
	}
}

/* A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
static double
nice_ceiling(double v)
{
	double		p,
				f;

	if (!(v > 0) || !isfinite(v))
		return 1;
	p = pow(10, floor(log10(v)));
	f = v / p;
	if (f <= 1)
		return p;
	if (f <= 2)
		return 2 * p;
	if (f <= 5)
		return 5 * p;
	return 10 * p;
}

/* Epoch i of a series as a value (non-finite drawn at the top) and its plot position. */
static void
point(const series *sr, int i, bool is_acc, int pw, int ph, int xspan, double ymax,
	  double *v, double *x, double *y)
{
	*v = is_acc ? sr->acc[i] : sr->loss[i];
	if (!isfinite(*v))
		*v = ymax;
	*x = MARGIN_L + (double) pw * sr->epoch[i] / xspan;
	*y = MARGIN_T + ph - ph * Min(Max(*v / ymax, 0), 1);
}

static void
chart(StringInfo s, int x0, const char *title, const series *tr, const series *va,
	  bool is_acc, int max_epoch)
{
	int			pw = CHART_W - MARGIN_L - MARGIN_R;
	int			ph = CHART_H - MARGIN_T - MARGIN_B;
	double		ymax = 1;
	int			xspan = Max(max_epoch, 1);
	/* at most 11 ticks; in int64 because epochs are user data and may be INT_MAX */
	int64		xstep = Max(1, ((int64) max_epoch + 9) / 10);
	const series *all[2] = {tr, va};
	const char *colour[2] = {"#1f77b4", "#ff7f0e"};
	const char *name[2] = {"train", "val"};

	if (!is_acc)
	{
		double		m = 0;

		for (int k = 0; k < 2; k++)
			for (int i = 0; i < all[k]->n; i++)
				if (isfinite(all[k]->loss[i]))
					m = Max(m, all[k]->loss[i]);
		ymax = nice_ceiling(m);
	}

	appendStringInfo(s, "<g transform=\"translate(%d,0)\">\n", x0);
	appendStringInfo(s, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n",
					 MARGIN_L + pw / 2, title);
	/* axes */
	appendStringInfo(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
					 MARGIN_L, MARGIN_T, MARGIN_L, MARGIN_T + ph);
	appendStringInfo(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
					 MARGIN_L, MARGIN_T + ph, MARGIN_L + pw, MARGIN_T + ph);
	/* y ticks and grid */
	for (int t = 0; t <= 5; t++)
	{
		double		v = ymax * t / 5;
		double		y = MARGIN_T + ph - (double) ph * t / 5;

		appendStringInfo(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
						 MARGIN_L, y, MARGIN_L + pw, y);
		appendStringInfo(s, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%g</text>\n",
						 MARGIN_L - 6, y + 4, v);
	}
	/* x ticks */
	for (int64 e = 0; e <= max_epoch; e += xstep)
	{
		double		x = MARGIN_L + (double) pw * e / xspan;

		appendStringInfo(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"black\"/>\n",
						 x, MARGIN_T + ph, x, MARGIN_T + ph + 4);
		appendStringInfo(s, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\">" INT64_FORMAT "</text>\n",
						 x, MARGIN_T + ph + 17, e);
	}
	appendStringInfo(s, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n",
					 MARGIN_L + pw / 2, CHART_H - 6);
	/* series */
	for (int k = 0; k < 2; k++)
	{
		const series *sr = all[k];

		if (sr->n == 0)
			continue;
		appendStringInfo(s, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
						 colour[k], k == 1 ? " stroke-dasharray=\"6,3\"" : "");
		for (int i = 0; i < sr->n; i++)
		{
			double		v,
						x,
						y;

			point(sr, i, is_acc, pw, ph, xspan, ymax, &v, &x, &y);
			appendStringInfo(s, "%s%.1f,%.1f", i ? " " : "", x, y);
		}
		appendStringInfoString(s, "\"/>\n");
		for (int i = 0; i < sr->n; i++)
		{
			double		v,
						x,
						y;

			point(sr, i, is_acc, pw, ph, xspan, ymax, &v, &x, &y);
			appendStringInfo(s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s epoch %d: %.4f</title></circle>\n",
							 x, y, colour[k], name[k], sr->epoch[i], v);
		}
	}
	/* legend */
	for (int k = 0; k < 2; k++)
	{
		int			lx = MARGIN_L + pw - 70,
					ly = MARGIN_T + 12 + 16 * k;

		appendStringInfo(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
						 lx, ly, lx + 22, ly, colour[k], k == 1 ? " stroke-dasharray=\"6,3\"" : "");
		appendStringInfo(s, "<text x=\"%d\" y=\"%d\" font-size=\"11\">%s</text>\n", lx + 28, ly + 4, name[k]);
	}
	appendStringInfoString(s, "</g>\n");
}

Datum
tl_plot(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	StringInfoData q;
	StringInfoData svg;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	series		tr,
				va;
	int			max_epoch = 0;
	char	   *heading;
	text	   *result;
	MemoryContext outer = CurrentMemoryContext;

	SPI_connect();
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT mode, dataset, status FROM %s WHERE id = $1", tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read run " INT64_FORMAT, run);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("training run " INT64_FORMAT " does not exist", run)));
	{
		StringInfoData h;

		initStringInfo(&h);
		appendStringInfo(&h, "run " INT64_FORMAT ": %s on ", run,
						 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		appendStringInfoString(&h, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		appendStringInfo(&h, " (%s)", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3));
		heading = h.data;
	}

	resetStringInfo(&q);
	appendStringInfo(&q, "SELECT phase, epoch, loss, acc FROM %s WHERE run = $1 ORDER BY phase, epoch",
					 tl_qualified("tl_run_epochs"));
	if (SPI_execute_with_args(q.data, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read epochs of run " INT64_FORMAT, run);
	memset(&tr, 0, sizeof(tr));
	memset(&va, 0, sizeof(va));
	tr.epoch = palloc(sizeof(int) * (SPI_processed + 1));
	tr.loss = palloc(sizeof(double) * (SPI_processed + 1));
	tr.acc = palloc(sizeof(double) * (SPI_processed + 1));
	va.epoch = palloc(sizeof(int) * (SPI_processed + 1));
	va.loss = palloc(sizeof(double) * (SPI_processed + 1));
	va.acc = palloc(sizeof(double) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		series	   *sr = strcmp(SPI_getvalue(tup, desc, 1), "val") == 0 ? &va : &tr;

		sr->epoch[sr->n] = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		sr->loss[sr->n] = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
		sr->acc[sr->n] = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
		max_epoch = Max(max_epoch, sr->epoch[sr->n]);
		sr->n++;
	}

	{
		/* built in the caller's context: SPI_finish frees SPI's */
		MemoryContext old = MemoryContextSwitchTo(outer);

		initStringInfo(&svg);
		MemoryContextSwitchTo(old);
	}
	appendStringInfo(&svg,
					 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
					 "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
					 2 * CHART_W, CHART_H + 24, 2 * CHART_W, CHART_H + 24);
	appendStringInfoString(&svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
	appendStringInfo(&svg, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">",
					 CHART_W, CHART_H + 18);
	xml_escape(&svg, heading);
	appendStringInfoString(&svg, "</text>\n");
	if (tr.n == 0 && va.n == 0)
		appendStringInfo(&svg, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\">no finished epoch yet</text>\n",
						 CHART_W, CHART_H / 2);
	else
	{
		chart(&svg, 0, "loss", &tr, &va, false, max_epoch);
		chart(&svg, CHART_W, "accuracy", &tr, &va, true, max_epoch);
	}
	appendStringInfoString(&svg, "</svg>\n");

	SPI_finish();
	result = cstring_to_text(svg.data);
	PG_RETURN_TEXT_P(result);
}
