#!/usr/bin/env bash
# demo.sh - the main job, end to end, on a throwaway cluster:
# build and install the extension into a private copy of PostgreSQL under
# build/, start a cluster in build/demo-cluster, create the extension, import
# the tutorial's hymenoptera dataset, print the dataset summary, then train
# the tutorial's finetune and feature_extractor models with their logs,
# show a few predictions, deploy the fine-tuned model and print each model's
# accuracy on the val images.
#
#   scripts/demo.sh           run everything, stop the cluster at the end
#   scripts/demo.sh --keep    leave the cluster running and say how to connect
#   scripts/demo.sh --stop    stop a cluster left running by --keep
#
# The dataset comes from ../shared/data/hymenoptera_data beside the checkout
# (or $TL_HYMENOPTERA), else from build/hymenoptera_data, else it is
# downloaded from the tutorial's URL into build/.
#
# Each step is a function; main() lists them in order.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pgcluster.sh

DEMO_CLUSTER=$TL_REPO/build/demo-cluster
DEMO_DB=transfer_demo
DEMO_DATASET=hymenoptera
DATASET_URL=${TL_DATASET_URL:-https://download.pytorch.org/tutorial/hymenoptera_data.zip}
KEEP=0

step() { printf '\n### %s\n' "$*"; }
die() { echo "demo.sh: $*" >&2; exit 1; }
sql() { tl_psql -d "$DEMO_DB" "$@"; }

# ---- steps -------------------------------------------------------------

build_and_install() {
	step "build and install transfer into $TL_TMP_INSTALL"
	tl_build_install || die "the build failed (run scripts/install-deps.sh first)"
}

start_cluster() {
	step "start a throwaway cluster in $DEMO_CLUSTER"
	tl_cluster_start "$DEMO_CLUSTER" || die "could not start the cluster"
	if [ "$KEEP" = 0 ]; then
		trap 'tl_cluster_stop "$DEMO_CLUSTER"; tl_log "cluster stopped"' EXIT
	fi
}

create_extension() {
	step "create database $DEMO_DB with the extension"
	createdb "$DEMO_DB"
	sql -c 'CREATE EXTENSION transfer' -c 'SELECT tl_version() AS transfer_version'
}

# Sets DATA to a hymenoptera_data directory, downloading it if needed.
find_dataset() {
	step "find the hymenoptera dataset"
	local local_copy=$TL_REPO/build/hymenoptera_data zip=$TL_REPO/build/hymenoptera_data.zip
	if [ -d "$TL_HYMENOPTERA/train" ]; then
		DATA=$TL_HYMENOPTERA
	elif [ -d "$local_copy/train" ]; then
		DATA=$local_copy
	else
		echo "not found at $TL_HYMENOPTERA; downloading $DATASET_URL"
		command -v curl >/dev/null && command -v unzip >/dev/null ||
			die "curl and unzip are needed to download the dataset (scripts/install-deps.sh installs them)"
		if ! curl -fL --progress-bar --connect-timeout 20 --max-time 600 -o "$zip.part" "$DATASET_URL"; then
			rm -f "$zip.part"
			die "the dataset is neither at $TL_HYMENOPTERA nor downloadable from $DATASET_URL;
  put the tutorial's hymenoptera_data there (or set TL_HYMENOPTERA=/path/to/hymenoptera_data) and rerun"
		fi
		mv "$zip.part" "$zip"
		rm -rf "$local_copy"
		unzip -q "$zip" -d "$TL_REPO/build" || die "could not unzip $zip"
		[ -d "$local_copy/train" ] || die "$zip does not contain hymenoptera_data/train"
		DATA=$local_copy
	fi
	echo "dataset: $DATA"
}

# Server-side import when the server's OS user can read the files; otherwise
# the client-side loader, which streams them through psql.
import_dataset() {
	step "import $DATA as dataset '$DEMO_DATASET'"
	if tl_as_server test -r "$DATA/train" -a -x "$DATA/train"; then
		sql -v dataset="$DEMO_DATASET" -v path="$DATA" <<<"SELECT * FROM tl_import_folder(:'dataset', :'path');"
	else
		echo "the server user $TL_SERVER_USER cannot read $DATA; loading from the client side"
		scripts/load-folder.sh "$DEMO_DATASET" "$DATA" -d "$DEMO_DB"
	fi
}

# torchvision's ImageNet weights as model resnet18-imagenet, training's default
# base; without the file or internet the demo goes on and says how to get it.
import_pretrained() {
	step "import torchvision's ImageNet ResNet-18 weights as model resnet18-imagenet"
	local status=0
	scripts/fetch-pretrained.sh -d "$DEMO_DB" || status=$?
	case $status in
		0) ;;
		2) echo "continuing without the pretrained weights (see above)" ;;
		*) die "importing the pretrained weights failed" ;;
	esac
}

print_summary() {
	step "dataset summary (tl_datasets)"
	sql -c "SELECT * FROM tl_datasets WHERE dataset = '$DEMO_DATASET' ORDER BY split, label"
	sql -c "SELECT split, sum(images) AS images FROM tl_datasets
			WHERE dataset = '$DEMO_DATASET' GROUP BY split ORDER BY split"
}

# The tutorial's two trainings, each printing its log as it goes.  From the
# pretrained ImageNet ResNet-18 when it has been imported (as
# resnet18-imagenet), else from random initialisation.  TL_DEMO_EPOCHS
# overrides the tutorial's 25 epochs.
train_models() {
	local epochs=${TL_DEMO_EPOCHS:-25} start=""
	if [ "$(sql -At -c "SELECT count(*) FROM tl_stored_models WHERE name = 'resnet18-imagenet'")" = 1 ]; then
		step "train: finetune and feature_extractor from resnet18-imagenet, $epochs epochs each"
	else
		step "train from scratch (no pretrained resnet18-imagenet), $epochs epochs each"
		start=", from_scratch => true"
	fi
	for mode in finetune feature_extractor; do
		sql -c "SELECT tl_train('$mode', '$DEMO_DATASET', epochs => $epochs, seed => 1$start, wait => true) AS run"
	done
	sql -c "SELECT r.id AS run, r.mode, round(r.best_val_acc::numeric, 4) AS best_val_acc,
				   r.best_epoch, m.name AS model, r.finished - r.started AS took
			FROM tl_runs r JOIN tl_stored_models m ON m.id = r.model_id
			WHERE r.dataset = '$DEMO_DATASET' ORDER BY r.id"
}

# A few predictions of the fine-tuned model on val images, beside their labels.
show_predictions() {
	step "predictions of the fine-tuned model on val images"
	sql -c "WITH m AS (SELECT s.name FROM tl_runs r JOIN tl_stored_models s ON s.id = r.model_id
					   WHERE r.dataset = '$DEMO_DATASET' AND r.mode = 'finetune' ORDER BY r.id DESC LIMIT 1)
			SELECT i.name, i.label, tl_predict(i.img, m.name) AS predicted
			FROM tl_images i, m
			WHERE i.dataset = '$DEMO_DATASET' AND i.split = 'val' AND i.id % 19 = 0 ORDER BY i.id"
}

# Deploy the fine-tuned model (tl_predict(img) then uses it) and evaluate
# both trained models on the val images: accuracy, loss, confusion matrix.
evaluate_models() {
	step "deploy the fine-tuned model; accuracy of each trained model on the val images (tl_evaluate)"
	sql -c "SELECT tl_deploy(s.name) AS deployment, s.name AS deployed_model
			FROM tl_runs r JOIN tl_stored_models s ON s.id = r.model_id
			WHERE r.dataset = '$DEMO_DATASET' AND r.mode = 'finetune' ORDER BY r.id DESC LIMIT 1"
	sql -c "SELECT m.name AS model, m.deployed, (e ->> 'images')::int AS images,
				   round((e ->> 'accuracy')::numeric, 4) AS accuracy, round((e ->> 'loss')::numeric, 4) AS loss,
				   e -> 'confusion' AS confusion
			FROM tl_models m, tl_evaluate(m.name, '$DEMO_DATASET', 'val') AS e
			WHERE m.source ->> 'kind' = 'trained' ORDER BY m.id"
	sql -c "SELECT label, tl_predict(img) AS predicted, count(*) AS images
			FROM tl_images WHERE dataset = '$DEMO_DATASET' AND split = 'val'
			GROUP BY 1, 2 ORDER BY 1, 2"
}

finish() {
	if [ "$KEEP" = 1 ]; then
		step "the cluster keeps running"
		echo "connect: psql -h $PGHOST -p $PGPORT -U $PGUSER -d $DEMO_DB"
		echo "stop:    scripts/demo.sh --stop"
	fi
}

# ---- main --------------------------------------------------------------

main() {
	build_and_install
	start_cluster
	create_extension
	find_dataset
	import_dataset
	import_pretrained
	print_summary
	train_models
	show_predictions
	evaluate_models
	finish
}

case "${1:-}" in
	"") ;;
	--keep) KEEP=1 ;;
	--stop)
		tl_cluster_stop "$DEMO_CLUSTER"
		tl_log "cluster in $DEMO_CLUSTER stopped"
		exit 0
		;;
	*)
		sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
		exit 2
		;;
esac
main
