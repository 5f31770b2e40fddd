#!/usr/bin/env bash
# Loading a stored model for prediction (model_store.c: keys and shapes
# checked, then each tensor detoasted and copied into the network) refuses
# tampered tensor rows with a clear error and no crash, and the session goes
# on predicting with an intact model afterwards.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_stored_tampered

echo "1..6"
predict_setup_db "$db"
img="(SELECT img FROM tl_images WHERE dataset = 'psynth' ORDER BY id LIMIT 1)"
good=$(q "$db" "SELECT tl_predict($img, 'predict_a')")
[ -n "$good" ]
ok $? "the intact model predicts ($good)"

# tamper MODEL SQL-ON-ITS-TENSORS: a copy of predict_a named MODEL, tampered
tamper() {
	q "$db" "INSERT INTO tl_stored_models (name, arch, num_classes, classes, image_size, base_width, source)
		SELECT '$1', arch, num_classes, classes, image_size, base_width, source FROM tl_stored_models WHERE name = 'predict_a';
	INSERT INTO tl_model_tensors (model_id, key, position, shape, data)
		SELECT (SELECT id FROM tl_stored_models WHERE name = '$1'), key, position, shape, data
		FROM tl_model_tensors WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'predict_a');
	UPDATE tl_model_tensors SET $2 WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = '$1') AND key = 'layer2.0.conv1.weight'" >/dev/null
}
predict_err() {		# the error line of predicting with model $1
	psql -X -qAt -d "$db" -c "SELECT tl_predict($img, '$1')" 2>&1 | grep -m1 ERROR
}
tamper short "data = substring(data FROM 1 FOR length(data) - 4)"
[[ $(predict_err short) == *"bytes of data for its shape"* ]]
ok $? "a tensor shorter than its shape is refused"
tamper renamed "key = 'layer2.0.conv9.weight'"
[[ $(predict_err renamed) == *"key \"layer2.0.conv"* ]]
ok $? "a renamed key is refused, naming it"
tamper reshaped "shape = ARRAY[shape[2], shape[1], shape[3], shape[4]], data = data"
err=$(predict_err reshaped)
[[ $err == *"size mismatch for \"layer2.0.conv1.weight\""* ]]
ok $? "a tensor of the wrong shape is refused ($err)"
out=$(psql -X -qAt -d "$db" -c "SELECT tl_predict($img, 'short')" -c "SELECT tl_predict($img, 'reshaped')" \
	-c "SELECT tl_predict($img, 'predict_a')" 2>/dev/null | tail -n 1)
is "$out" "$good" "after the refused loads the same session predicts with the intact model"
is "$(q "$db" "SELECT count(*) FROM tl_model_cache() WHERE model IN ('short', 'renamed', 'reshaped')")" "0" \
	"no refused model is cached"
tap_exit
