#!/usr/bin/env bash
# How often INT8 decides as fp32, over trainings: for each seed, one model trained on the
# bundled sample (divided with random state 2025) with MODEL's recipe, then `test` over every
# image of the three splits with libtorch fp32 and with OpenVINO INT8 (the ranges `train`
# stored); prints, per seed, how many decisions agree and both accuracies. MODEL:
#   efficientnet_b0      the demo config (configs/demo.json, 12 epochs)
#   mobilenet_v3_large   tests/end_to_end.rs's INT8 recipe (batch 8, 30 epochs, rate 0.001)
# usage: scripts/int8_agreement.sh [MODEL=efficientnet_b0] [SEEDS="1 2 3 4"]
#        (about 1 minute per seed on 2 cores; work in target/int8_agreement/)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-efficientnet_b0}
seeds=${2:-1 2 3 4}
case "$model" in
    efficientnet_b0 | mobilenet_v3_large) ;;
    *) echo "error: MODEL=$model is not efficientnet_b0 or mobilenet_v3_large" >&2; exit 2 ;;
esac
for seed in $seeds; do
    if ! [[ "$seed" =~ ^[0-9]{1,6}$ ]]; then
        echo "error: seed $seed is not a whole number" >&2; exit 2
    fi
done
[ -x target/release/test ] || scripts/setup.sh
root=$PWD
python=$root/.venv/bin/python
for seed in $seeds; do
    work=$root/target/int8_agreement/$model-$seed
    rm -rf "$work" && mkdir -p "$work" && cd "$work"
    "$python" - "$root" "$model" "$seed" <<'PY'
import json, sys
root, model, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = json.load(open(f"{root}/configs/demo.json"))
config["data"].update(base_image_path=f"{root}/sample_images", csv_path=f"{root}/image_data.csv")
config["system"]["seed"] = seed
if model == "mobilenet_v3_large":
    config["model"]["backbone"] = model
    config["training"].update(batch_size=8, epochs=30, patience=30, learning_rate=0.001, backbone_lr=0.001)
json.dump(config, open("config.json", "w"))
PY
    "$root/target/release/divide" --input-file "$root/image_data.csv" --random-state 2025 > divide.log 2>&1
    "$root/target/release/train" --config config.json > train.log 2>&1 || { tail -5 train.log >&2; exit 1; }
    best=$(ls -d "$work"/results/run_*/model/best_model.safetensors)
    for pair in "libtorch fp32" "openvino int8"; do
        set -- $pair
        "$root/target/release/test" --model-path "$best" --engine "$1" --precision "$2" --data-dir data \
            --output-dir "predictions-$2" > "test-$2.log" 2>&1 || { tail -5 "test-$2.log" >&2; exit 1; }
    done
    "$python" - "$model" "$seed" <<'PY'
import csv, glob, sys
def read(folder):
    rows = list(csv.DictReader(open(glob.glob(f"{folder}/*/inference_results.csv")[0])))
    return [r["predicted_class"] for r in rows], [r["true_class"] for r in rows]
fp32, truth = read("predictions-fp32")
int8, _ = read("predictions-int8")
agree = sum(a == b for a, b in zip(fp32, int8))
accuracy = lambda predicted: sum(p == t for p, t in zip(predicted, truth)) / len(truth)
print(f"{sys.argv[1]} seed {sys.argv[2]}: {agree} of {len(fp32)} decisions as fp32; "
      f"accuracy int8 {accuracy(int8):.4f}, fp32 {accuracy(fp32):.4f}")
PY
    cd "$root"
done
