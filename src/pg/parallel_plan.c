/*
 * parallel_plan.c - parallel plans for predictions over a table of images.
 *
 * PostgreSQL sizes a parallel scan by heap pages: below
 * min_parallel_table_scan_size (8 MB) it plans none.  Images are TOASTed, so
 * a table of them has a tiny heap (1,530 rows fill 12 pages) however much
 * work a prediction per row is, and a default session predicted in one
 * backend.  Its thread pool keeps both cores busy, but the pool's handoffs
 * and a JPEG decode that runs on one thread leave about a sixth of them
 * idle, while one process per core, each predicting its own rows on one
 * thread, keeps them busy (2 cores: 115 images/s in one backend, 131 with a
 * worker beside the leader).
 *
 * So a planner hook (set_rel_pathlist_hook) adds a parallel sequential scan
 * for a single-table query that calls a prediction function on its rows,
 * when PostgreSQL made none: one process per CPU the backend may run on,
 * the leader's included, at most max_parallel_workers_per_gather workers.
 * The planner still compares costs: the functions' COST makes the parallel
 * plan the cheaper one above about a hundred rows.  A parallel scan hands
 * out whole heap pages, about 70-130 rows of TOASTed images each, and the
 * query waits for the process with the most; so the hook also wants 4 pages
 * per process, or the uneven last pages cost more than the second process
 * gains.
 *
 * The prediction functions are marked by their support function,
 * tl_predict_support.  The planner calls it while it simplifies the query's
 * expressions, before it builds paths: that loads this library (and so
 * installs the hook) in time for the first query of a session too.  It
 * leaves the calls unchanged.
 *
 * Nothing is added where the user decided: a table with the parallel_workers
 * storage parameter, max_parallel_workers_per_gather = 0, a query that
 * cannot run in parallel (rel->consider_parallel), or a scan PostgreSQL
 * already parallelised.
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "fmgr.h"
#include "nodes/nodeFuncs.h"
#include "nodes/supportnodes.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "utils/lsyscache.h"

#include "nn/tl_resnet.h"
#include "transfer_pg.h"

/* heap pages per process below which a parallel scan is not offered */
#define TL_PAGES_PER_PROCESS 4

static set_rel_pathlist_hook_type prev_set_rel_pathlist_hook = NULL;

/* tl_predict_support's own oid, learnt from its first call */
static Oid	support_oid = InvalidOid;

PG_FUNCTION_INFO_V1(tl_predict_support);

/* A prediction function's support function: marks it for the hook below. */
Datum
tl_predict_support(PG_FUNCTION_ARGS)
{
	support_oid = fcinfo->flinfo->fn_oid;
	PG_RETURN_POINTER(NULL);	/* no request is answered: the call stays as it is */
}

static bool
calls_prediction_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr) && get_func_support(((FuncExpr *) node)->funcid) == support_oid)
		return true;
	return expression_tree_walker(node, calls_prediction_walker, context);
}

/* Does the query compute a prediction per row of rel: in its target list or rel's quals? */
static bool
calls_prediction(PlannerInfo *root, RelOptInfo *rel)
{
	ListCell   *lc;

	if (calls_prediction_walker((Node *) root->parse->targetList, NULL))
		return true;
	foreach(lc, rel->baserestrictinfo)
	{
		RestrictInfo *ri = lfirst_node(RestrictInfo, lc);

		if (calls_prediction_walker((Node *) ri->clause, NULL))
			return true;
	}
	return false;
}

/* Workers for a prediction scan of rel, or 0 for none. */
static int
prediction_workers(RelOptInfo *rel)
{
	int			leader = parallel_leader_participation ? 1 : 0;
	int			workers = Min(tl_usable_cpus() - leader, max_parallel_workers_per_gather);

	if (workers < 1 || rel->pages < (BlockNumber) (TL_PAGES_PER_PROCESS * (workers + leader)))
		return 0;
	return workers;
}

static void
tl_set_rel_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti, RangeTblEntry *rte)
{
	int			workers;

	if (prev_set_rel_pathlist_hook)
		prev_set_rel_pathlist_hook(root, rel, rti, rte);

	if (rel->reloptkind != RELOPT_BASEREL || rte->rtekind != RTE_RELATION ||
		(rte->relkind != RELKIND_RELATION && rte->relkind != RELKIND_MATVIEW) ||
		rte->inh || rte->tablesample != NULL)
		return;
	/* a single-table query: its target list is computed on this scan's rows */
	if (bms_membership(root->all_baserels) != BMS_SINGLETON)
		return;
	if (!rel->consider_parallel || rel->partial_pathlist != NIL || rel->rel_parallel_workers != -1)
		return;
	/* the cheap checks first: this runs for every single-table query of the session */
	if (!OidIsValid(support_oid) || (workers = prediction_workers(rel)) == 0 ||
		!calls_prediction(root, rel))
		return;
	add_partial_path(rel, create_seqscan_path(root, rel, NULL, workers));
}

void
tl_parallel_plan_install(void)
{
	prev_set_rel_pathlist_hook = set_rel_pathlist_hook;
	set_rel_pathlist_hook = tl_set_rel_pathlist;
}
