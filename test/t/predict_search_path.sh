#!/usr/bin/env bash
# A hostile search_path can't redirect the prediction functions: with a
# schema ahead of pg_catalog whose text "=" is always true, a fresh session
# (so the lookups are prepared under that search_path) still predicts with
# the model it names and evaluates only the split it names.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_search_path

echo "1..4"
predict_setup_db "$db"
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'other', 'val', label, name, img FROM tl_images WHERE dataset OPERATOR(pg_catalog.=) 'psynth'"
psql -X -q -d "$db" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE ROLE predict_evil_owner;
CREATE SCHEMA evil AUTHORIZATION predict_evil_owner;
CREATE FUNCTION evil.always(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always);
SQL

clean="SELECT md5(string_agg(tl_predict(img, 'predict_b'), ',' ORDER BY id)) FROM tl_images WHERE dataset OPERATOR(pg_catalog.=) 'psynth'"
expected=$(q "$db" "$clean")
hostile=$(psql -X -qAt -d "$db" -c "SET search_path = evil, public, pg_catalog" \
	-c "SELECT ('a'::text = 'b'::text) AS hijacked" -c "$clean" 2>&1)
is "$(head -n 1 <<<"$hostile")" t "the hostile operator is in effect for the session's own queries"
[ -n "$expected" ] && [ "$(tail -n 1 <<<"$hostile")" = "$expected" ]
ok $? "tl_predict(img, model) still uses the named model"
images=$(psql -X -qAt -d "$db" -c "SET search_path = evil, public, pg_catalog" \
	-c "SELECT tl_evaluate('predict_a', 'psynth') ->> 'images'" 2>&1)
is "$images" 25 "tl_evaluate still reads only the named dataset ($images images)"
deployed=$(psql -X -qAt -d "$db" -c "SET search_path = evil, public, pg_catalog" \
	-c "SELECT FROM tl_deploy('predict_b')" \
	-c "SELECT md5(string_agg(tl_predict(img), ',' ORDER BY id)) FROM tl_images WHERE dataset OPERATOR(pg_catalog.=) 'psynth'" 2>&1 | tail -n 1)
is "$deployed" "$expected" "tl_deploy and tl_predict(img) pick the right model"

dropdb "$db"
psql -X -q -d postgres -c "DROP ROLE predict_evil_owner" 2>/dev/null
tap_exit
