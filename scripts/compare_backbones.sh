#!/usr/bin/env bash
# The backbone trade-off on the bundled sample: trains configs/demo.json once per backbone
# (from scratch, 64 px, 12 epochs) and prints test accuracy, training images/s and the
# 224 px inference speed of each (fp32 and bf16, batch 32). About 4 minutes on 2 cores.
# usage: scripts/compare_backbones.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
cargo build --release --quiet -p imgtype --example bench_forward
[ -f data/train_data.csv ] || target/release/divide --input-file image_data.csv --output-dir data --random-state 2025 >&2
work=target/compare_backbones
rm -rf "$work" && mkdir -p "$work"
echo "| backbone | demo test accuracy | demo training (images/s, 64 px) | forward fp32 224 px b32 (images/s) | forward bf16 (images/s) |"
echo "| --- | --- | --- | --- | --- |"
for backbone in efficientnet_b0 mobilenet_v3_large mobilenet_v3_small mobilenet_v2; do
    python3 - "$backbone" "$work/$backbone.json" <<'PY'
import json, sys
config = json.load(open("configs/demo.json"))
config["model"]["backbone"] = sys.argv[1]
config["paths"] = {"result_dir": "target/compare_backbones/results"}
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
    out=$(target/release/train --config "$work/$backbone.json" 2>/dev/null)
    run=$(printf '%s\n' "$out" | sed -n 's/^run folder: //p')
    accuracy=$(printf '%s\n' "$out" | sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
    speed=$(python3 -c "import csv,statistics,sys; rows=list(csv.DictReader(open(sys.argv[1]))); print(f'{statistics.median(float(r[\"images_per_second\"]) for r in rows):.0f}')" "$run/logs/metrics.csv")
    fp32=$(target/release/examples/bench_forward 224 32 3 fp32 "$backbone" | sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p')
    bf16=$(target/release/examples/bench_forward 224 32 3 bf16 "$backbone" | sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p')
    echo "| $backbone | $accuracy | $speed | $fp32 | $bf16 |"
done
