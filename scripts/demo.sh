#!/usr/bin/env bash
# End-to-end demo on the bundled sample: set-up if needed, then divide → train → test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== divide: image_data.csv -> data/{train,validation,test}_data.csv"
target/release/divide --input-file image_data.csv --output-dir data --random-state 2025

echo "== train: configs/demo.json (from scratch, 64 px)"
train_out=$(target/release/train --config configs/demo.json)
echo "$train_out"
run_dir=$(printf '%s\n' "$train_out" | sed -n 's/^run folder: //p')

echo "== test: every image of the three splits with $run_dir"
target/release/test --model-path "$run_dir"

echo
printf '%s\n' "$train_out" | grep '^test accuracy'
echo "training results: $run_dir"
echo "test results:     $(ls -dt test_result/run_* | head -1)"
