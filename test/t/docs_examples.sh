#!/usr/bin/env bash
# Every ```sql block of README.md and docs/*.md runs: the blocks of a file
# run in order in one psql session (so \gset variables carry over) against a
# fresh copy of a prepared database, and the test fails when one errors.
# Prints TAP, one point per block.
#
# The prepared database is what the docs assume a reader has by then:
#   - the extension, and the tutorial's dataset "hymenoptera" imported from
#     a tiny copy (4 train and 2 val images per class);
#   - "resnet18-imagenet": a randomly initialised torchvision ResNet-18
#     standing in for the ImageNet weights (no internet here);
#   - run 1, the README's first tl_train('finetune', 'hymenoptera'), so its
#     model hymenoptera_finetune_run1 exists (docs/prediction.md deploys it);
#   - the prediction fixtures: models predict_a and predict_b
#     (test/fixtures/predict), dataset "pregress" (test/fixtures/image), and
#     a table photos(id, name, img);
#   - the roles analyst, loader and importer (docs/datasets.md grants to them).
# docs/weights.md starts from the same database without resnet18-imagenet
# and run 1, since it imports the pretrained weights itself.
#
# Before running, a block's text is changed only so (nothing else):
#   - server paths: /srv/data/hymenoptera_data is the tiny copy and
#     /srv/models/ a directory holding resnet18-f37072fd.pth (the random
#     ResNet-18) and x.safetensors (predict_a's weights);
#   - tl_train('MODE', 'DATASET' gets ", epochs => 1, image_size => 64" after
#     its dataset, so the docs' 25-epoch examples take seconds;
#   - CREATE EXTENSION transfer becomes CREATE EXTENSION IF NOT EXISTS.
# A block preceded by a line "<!-- not-tested: REASON -->" is skipped
# (reported as a TAP skip with the reason); keep them rare.  Blocks that are
# not SQL to run (signatures, output) are fenced as ```text, not ```sql.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/lib/predict_setup.sh	# predict_setup_db, and tap.bash

work=$TL_REPO/build/test-data/docs-examples
base=tl_docs_base
full=tl_docs_full
db=tl_docs_run
hym=$(tl_find_hymenoptera) || { echo "1..0 # SKIP the hymenoptera dataset is not there"; exit 0; }
fx=test/fixtures

cleanup() {
	for d in $db $full $base; do dropdb --if-exists "$d" 2>/dev/null; done
	tl_psql -d postgres -c 'DROP ROLE IF EXISTS analyst, loader, importer' 2>/dev/null
}
cleanup
rm -rf "$work" && mkdir -p "$work/models" "$work/data"

# ---- files the server reads
for split in train val; do
	n=4; [ $split = val ] && n=2
	for cls in ants bees; do
		mkdir -p "$work/data/hymenoptera_data/$split/$cls"
		ls "$hym/$split/$cls" | grep '\.jpg$' | sort | head -n $n |
			while read -r f; do cp "$hym/$split/$cls/$f" "$work/data/hymenoptera_data/$split/$cls/"; done
	done
done
/usr/bin/python3 - "$work/models/resnet18-f37072fd.pth" <<'EOF' || echo "# could not make the random ResNet-18"
import sys, torch, torchvision
torch.manual_seed(0)
torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])
EOF
cp "$fx/predict/predict_a.safetensors" "$work/models/x.safetensors"
chmod -R a+rX "$TL_REPO/build/test-data"

# ---- the prepared databases
tl_psql -d postgres >/dev/null <<'EOF'
DO $$ BEGIN CREATE ROLE analyst; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE loader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE importer; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
EOF
predict_setup_db $base		# the extension, predict_a, predict_b, dataset psynth
tl_psql -d $base -v work="$work" >/dev/null <<'EOF'
SET client_min_messages = warning;
SELECT count(*) FROM tl_import_folder('hymenoptera', :'work' || '/data/hymenoptera_data');
UPDATE tl_images SET dataset = 'pregress' WHERE dataset = 'psynth';
CREATE TABLE photos (id int PRIMARY KEY, name text NOT NULL, img bytea NOT NULL);
INSERT INTO photos SELECT row_number() OVER (ORDER BY dataset, name), name, img
FROM tl_images WHERE dataset = 'hymenoptera' OR name IN ('synth_rgb.png', 'synth_gray.jpg');
EOF
ok $? "prepared $base"
createdb -T $base $full && tl_psql -d $full -v work="$work" >/dev/null <<'EOF'
SET client_min_messages = warning;
SELECT tl_import_weights_file('resnet18-imagenet', :'work' || '/models/resnet18-f37072fd.pth');
SELECT tl_train('finetune', 'hymenoptera', epochs => 1, image_size => 64, wait => true);
SELECT tl_wait(1);
EOF
[ $? = 0 ] && [ "$(tl_psql -At -d $full -c "SELECT string_agg(name, ',') FROM tl_models WHERE name LIKE 'hymenoptera%'")" = hymenoptera_finetune_run1 ]
ok $? "prepared $full: run 1 stored hymenoptera_finetune_run1"

# ---- the blocks: FILE -> psql script with a marker before each block
# extract FILE OUT: writes OUT (the script) and OUT.blocks (one "LINE SKIP
# REASON" line per block) with the substitutions above.
extract() {
	/usr/bin/python3 - "$1" "$2" "$work" <<'EOF'
import re, sys
path, out, work = sys.argv[1:]
lines = open(path).read().split('\n')
script, blocks, i = [], [], 0
while i < len(lines):
    if lines[i].strip() == '```sql':
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith('```'):
            j += 1
        prev = lines[i - 1].strip() if i > 0 else ''
        m = re.match(r'<!--\s*not-tested:\s*(.*?)\s*-->$', prev)
        n = len(blocks) + 1
        if m:
            blocks.append(f'{i + 1} skip {m.group(1)}')
        else:
            blocks.append(f'{i + 1} run')
            text = '\n'.join(lines[i + 1:j])
            text = text.replace('/srv/data/hymenoptera_data', work + '/data/hymenoptera_data')
            text = text.replace('/srv/models/', work + '/models/')
            text = re.sub(r'CREATE EXTENSION transfer\b', 'CREATE EXTENSION IF NOT EXISTS transfer', text)
            text = re.sub(r"(tl_train\('\w+', '[^']+')", r"\1, epochs => 1, image_size => 64", text)
            script.append(f'\\echo @@block {n}@@\n{text}\n')
        i = j
    i += 1
script.append('\\echo @@end@@\n')
open(out, 'w').write('\n'.join(script))
open(out + '.blocks', 'w').write('\n'.join(blocks) + ('\n' if blocks else ''))
EOF
}

files="README.md $(ls docs/*.md)"
for f in $files; do
	name=$(echo "$f" | tr / _)
	extract "$f" "$work/$name.sql" || { ok 1 "$f: extract the sql blocks"; continue; }
	[ -s "$work/$name.sql.blocks" ] || continue
	template=$full
	[ "$f" = docs/weights.md ] && template=$base
	dropdb --if-exists $db 2>/dev/null
	createdb -T $template $db || { ok 1 "$f: create $db"; continue; }
	(cd "$work" && psql -X -v ON_ERROR_STOP=1 -d $db -f "$work/$name.sql") >"$work/$name.out" 2>&1
	status=$?
	last=$(grep -o '^@@block [0-9]*@@' "$work/$name.out" | tail -n 1 | tr -dc 0-9)
	grep -q '^@@end@@' "$work/$name.out" || [ $status != 0 ] || status=1
	n=0
	while read -r line skip reason; do
		n=$((n + 1))
		if [ "$skip" = skip ]; then
			tap_n=$((tap_n + 1))
			echo "ok $tap_n - $f:$line # SKIP $reason"
		elif [ $status = 0 ] || [ "$n" -lt "${last:-0}" ]; then
			ok 0 "$f:$line runs"
		elif [ "$n" = "${last:-0}" ]; then
			ok 1 "$f:$line runs"
			sed -n "/^@@block $n@@/,\$p" "$work/$name.out" | head -n 30 | sed 's/^/#   /'
		else
			tap_n=$((tap_n + 1))
			echo "not ok $tap_n - $f:$line runs # not reached: an earlier block failed"
			tap_failed=$((tap_failed + 1))
		fi
	done <"$work/$name.sql.blocks"
	# wait for runs a block left in the background, so the copy can be dropped
	psql -X -q -d $db -c "SELECT tl_wait(id) FROM tl_runs WHERE status IN ('queued', 'running')" >/dev/null 2>&1
	dropdb $db
done

cleanup
echo "1..$tap_n"
tap_exit
