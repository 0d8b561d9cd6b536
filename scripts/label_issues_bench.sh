#!/usr/bin/env bash
# How well `train --cross-validate` finds planted label faults, against cleanlab on the same
# out-of-fold probabilities, and what the cross-validation costs against one training run.
# For each seed: the sample's split files with FRACTION of the images moved to another class
# (scripts/bench/planted_label_issues.py), the demo config cross-validated in FOLDS folds,
# precision in the top N and recall in the top 2N (N planted) of our ranking and of cleanlab's.
# usage: scripts/label_issues_bench.sh [SEEDS="1 2 3"] [FRACTION=0.06] [FOLDS=5]
#        (about 2 minutes per seed on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1 2 3}
fraction=${2:-0.06}
folds=${3:-5}
scripts/setup.sh >&2
py=.venv/bin/python
work=target/label_issues_bench
rm -rf "$work" && mkdir -p "$work"
target/release/divide --input-file image_data.csv --output-dir "$work/data" --random-state 2025 >/dev/null
config_for() {
    "$py" -c 'import json, sys; c = json.load(open("configs/demo.json")); c["paths"] = {"data_dir": sys.argv[1], "result_dir": sys.argv[2]}; json.dump(c, open(sys.argv[3], "w"))' "$@"
}
config_for "$work/data" "$work/one_run" "$work/one_run.json"
start=$(date +%s.%N)
target/release/train --config "$work/one_run.json" >/dev/null 2>&1
one_run=$(echo "$(date +%s.%N) - $start" | bc)
echo "one training run of the demo config: ${one_run} s"
for seed in $seeds; do
    dir="$work/seed$seed"
    "$py" scripts/bench/planted_label_issues.py plant "$work/data" "$dir/data" "$fraction" "$seed"
    config_for "$dir/data" "$dir" "$dir/config.json"
    start=$(date +%s.%N)
    target/release/train --config "$dir/config.json" --cross-validate "$folds" --cv-dir "$dir/cv" > "$dir/train.out" 2> "$dir/train.err"
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    echo "seed $seed: cross-validation ${seconds} s = $(echo "scale=2; $seconds / $one_run" | bc)x one run"
    "$py" scripts/bench/planted_label_issues.py score "$dir/cv" "$dir/data/planted.csv" | tee "$dir/score.json"
done
