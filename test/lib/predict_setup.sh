# predict_setup.sh - shared setup of the prediction tests in test/t (sourced).
#
#   predict_setup_db DB   create DB with the extension, the two tiny fixture
#                         models (predict_a: ants/bees at 32 px, predict_b:
#                         ants/bees/wasps at 40 px, test/fixtures/predict) and
#                         the committed image fixtures as dataset 'psynth';
#                         if that fails, "Bail out!" (TAP) and exit 1
#   q DB SQL              one value, unaligned
#
# and test/t/tap.bash's TAP helpers (ok, is, tap_exit).
#
# The server reads the fixtures itself (pg_read_binary_file): from
# $TL_TEST_FIXTURES, the copy scripts/test.sh makes where the server's OS user
# can read it, else from the repository.

TL_REPO=${TL_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PREDICT_FIXTURES=${TL_TEST_FIXTURES:-$TL_REPO/test/fixtures}

. "$(dirname "${BASH_SOURCE[0]}")/../t/tap.bash"

q() {				# q DB SQL: one value, unaligned
	psql -X -v ON_ERROR_STOP=1 -qAt -d "$1" -c "$2"
}

predict_setup_db() {
	local db=$1
	dropdb --if-exists "$db" 2>/dev/null
	createdb "$db" && psql -X -v ON_ERROR_STOP=1 -q -d "$db" -v fx="$PREDICT_FIXTURES" >/dev/null <<'SQL' ||
SET client_min_messages = warning;
CREATE EXTENSION transfer;
SELECT tl_import_weights('predict_a',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
SELECT tl_import_weights('predict_b',
	pg_read_binary_file(:'fx' || '/predict/predict_b.safetensors'), ARRAY['ants', 'bees', 'wasps']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'predict_a';
UPDATE tl_stored_models SET image_size = 40 WHERE name = 'predict_b';
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'psynth', 'val', CASE WHEN f < 'synth_l' THEN 'ants' ELSE 'bees' END, f,
	pg_read_binary_file(:'fx' || '/image/' || f)
FROM pg_ls_dir(:'fx' || '/image') AS f
WHERE f ~ '\.(jpg|png)$';
SQL
		{ echo "Bail out! setup failed"; exit 1; }
}
