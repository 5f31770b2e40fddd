# train_lib.bash - helpers of the training tests (train_faults.sh,
# train_resume_stages.sh, train_roles.sh).  Source it after scripts/pgcluster.sh with $db set; prove
# runs only *.sh, so this file is not a test.
#
#   q ARGS...                   psql -At against $db, stopping on errors
#   (wait_for SQL SECONDS comes from tap.bash)
#   server_up                   wait (up to 60 s) until $db accepts connections
#   hymenoptera_subset DEST NTRAIN NVAL
#                               an ImageFolder tree with the first NTRAIN train
#                               and NVAL val JPEGs (byte order) of each class

. "$(dirname "${BASH_SOURCE[0]}")/tap.bash"
q() { tl_psql -At -d "$db" "$@"; }

server_up() {
	local i
	for ((i = 0; i < 300; i++)); do
		psql -X -At -d "$db" -c 'SELECT 1' >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

hymenoptera_subset() {
	local dest=$1 ntrain=$2 nval=$3 split cls
	rm -rf "$dest"
	for split in train val; do
		for cls in ants bees; do
			mkdir -p "$dest/$split/$cls"
			find "$TL_HYMENOPTERA/$split/$cls" -name '*.jpg' | LC_ALL=C sort |
				head -n "$([ $split = train ] && echo "$ntrain" || echo "$nval")" | xargs cp -t "$dest/$split/$cls"
		done
	done
	chmod -R a+rX "$TL_REPO/build/test-data"
}

# same_as_ref RUN: "<epoch rows equal to run $ref's> <epoch rows of RUN>
# <model tensors equal to $ref's>", for resume tests that compare a resumed
# run with an uninterrupted reference run (bitwise at the same thread count).
same_as_ref() {
	q -c "SELECT (SELECT count(*) FILTER (WHERE a.loss = b.loss AND a.acc = b.acc AND a.lr = b.lr)
				  FROM tl_run_epochs a JOIN tl_run_epochs b USING (epoch, phase)
				  WHERE a.run = $ref AND b.run = $1)
			|| ' ' || (SELECT count(*) FROM tl_run_epochs WHERE run = $1)
			|| ' ' ||
			(SELECT count(*) FILTER (WHERE a.data = b.data)
			 FROM tl_model_tensors a JOIN tl_model_tensors b USING (key)
			 WHERE a.model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)
			   AND b.model_id = (SELECT model_id FROM tl_runs WHERE id = $1))"
}
