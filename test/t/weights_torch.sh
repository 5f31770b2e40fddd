#!/usr/bin/env bash
# Full-size ResNet-18 weights through the tables and back, with PyTorch as
# the oracle: torch-written zip, legacy and safetensors files (seeded random
# weights, made by test/scripts/make_checkpoints.py into build/) import with
# exactly torch's tensors; tl_export's .pth loads with
# torch.load(weights_only=True) and torchvision's strict load_state_dict, and
# both export formats hold the original bits; the engine's logits on the
# exported weights equal torch's (tolerance in test_checkpoint_logits.c).
# Skips when torch is not installed.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

tap_require_torch

db=tl_weights_torch
q() { tl_psql -X -At -d $db "$@"; }

echo "1..17"
work=$TL_REPO/build/test-data/weights-torch
rm -rf "$work" && mkdir -p "$work"
$PY test/scripts/make_checkpoints.py full "$work" >/dev/null && chmod -R a+rX "$work"
ok $? "torch wrote full-size ResNet-18 checkpoints (1000 and 2 classes; zip, legacy, safetensors)"

dropdb --if-exists $db 2>/dev/null
createdb $db && q -c 'CREATE EXTENSION transfer' >/dev/null
ok $? "created database $db"

q -c "SELECT tl_import_weights_file('r18-zip', '$work/resnet18.pth'),
             tl_import_weights_file('r18-legacy', '$work/resnet18_legacy.pth'),
             tl_import_weights_file('r18-st', '$work/resnet18.safetensors'),
             tl_import_weights_file('r18-2', '$work/resnet18_2cls.pth', ARRAY['ants', 'bees'])" >/dev/null
ok $? "imported the three formats and a 2-class model"
is "$(q -c "SELECT string_agg(name || ':' || num_classes || ':' || base_width || ':' || classes[num_classes], ' ' ORDER BY id) FROM tl_stored_models")" \
	"r18-zip:1000:64:toilet tissue r18-legacy:1000:64:toilet tissue r18-st:1000:64:toilet tissue r18-2:2:64:bees" \
	"models: 1000 classes get torchvision's ImageNet names by default (the last is 'toilet tissue'), base width 64"
is "$(q -c "SELECT b.name || ':' || count(*) FILTER (WHERE ta.data = tb.data AND ta.shape = tb.shape)
	FROM tl_model_tensors ta JOIN tl_stored_models a ON a.id = ta.model_id AND a.name = 'r18-zip'
	JOIN tl_stored_models b ON b.name IN ('r18-legacy', 'r18-st')
	JOIN tl_model_tensors tb ON tb.model_id = b.id AND tb.key = ta.key GROUP BY b.id, b.name ORDER BY b.id")" \
	"r18-legacy:102
r18-st:102" "legacy and safetensors imports hold the zip import's 102 tensors bit for bit"

export_to() {		# export_to MODEL FORMAT FILE
	q -c "SELECT encode(tl_export('$1', '$2'), 'base64')" | base64 -d >"$3"
}
for m in r18-zip r18-legacy r18-st; do
	export_to $m pth "$work/$m.export.pth" && export_to $m safetensors "$work/$m.export.safetensors"
	ok $? "exported $m as .pth and .safetensors"
done
for m in r18-zip r18-legacy r18-st; do
	$PY test/scripts/check_weights_export.py compare "$work/resnet18.pth" "$work/$m.export.pth" 1000 &&
		$PY test/scripts/check_weights_export.py compare "$work/resnet18.pth" "$work/$m.export.safetensors" 1000
	ok $? "$m: torch.load(weights_only=True) + strict load_state_dict; both exports equal torch's tensors bit for bit"
done
export_to r18-2 pth "$work/r18-2.export.pth" &&
	$PY test/scripts/check_weights_export.py compare "$work/resnet18_2cls.pth" "$work/r18-2.export.pth" 2
ok $? "2-class model: resnet18(num_classes=2) loads the export strictly, bits equal"

# Logits: torch on the original file, the engine on what tl_export gave back.
make -s build/unit/checkpoint/test_checkpoint_logits >/dev/null
logits() {			# logits ORIGINAL CLASSES EXPORT
	local dir=$work/logits-$2 ext=${3##*.}
	mkdir -p "$dir" && cp "$3" "$dir/model.$ext" &&
		$PY test/scripts/check_weights_export.py batch "$1" "$2" "$dir"
	ok $? "torch logits of $(basename "$1") on a seeded 3 x 224 x 224 batch"
	TL_LOGITS_DIR="$dir" TL_LOGITS_MODEL=model.$ext build/unit/checkpoint/test_checkpoint_logits >"$dir/tap" 2>&1
	local status=$?
	sed 's/^/# /' "$dir/tap"
	ok $status "engine logits from the exported .$ext equal torch's ($2 classes)"
}
logits "$work/resnet18_2cls.pth" 2 "$work/r18-2.export.pth"
logits "$work/resnet18.pth" 1000 "$work/r18-legacy.export.safetensors"

dropdb $db
ok $? "dropped $db"
rm -rf "$work"
