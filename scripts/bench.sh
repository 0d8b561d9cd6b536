#!/usr/bin/env bash
# Every performance ratio of this project, measured on this machine in one run: ours and the
# reference side by side, alternating, ROUNDS rounds, medians. References: torchvision eager
# (forward), what the Python system's test.py and training loop do (scripts/bench/reference_*.py),
# a bare eager PyTorch loop on random tensors, and this tool's own earlier screening; for
# serving, OpenVINO and ONNX Runtime from Python on the same ONNX model, a PIL + OpenVINO
# pipeline (scripts/bench/openvino_pipeline.py) and 8 concurrent callers of the Python module;
# last, two training jobs sharing the machine (scripts/bench/contention.sh).
# The backbones' forward speed is listed too; scripts/compare_backbones.sh adds their accuracy on the demo.
# usage: scripts/bench.sh [ROUNDS=3] [PHOTOS=200]     (about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
photos=${2:-200}
scripts/setup.sh >&2
cargo build --release --quiet -p imgtype --examples
cargo build --release --quiet -p imgtype-infer --example backend_api
py=.venv/bin/python
work=target/bench
mkdir -p "$work"
for size in 500 1600; do
    if [ ! -f "$work/p$size/images.csv" ] || [ "$(($(wc -l < "$work/p$size/images.csv") - 1))" != "$photos" ]; then
        echo "making $photos photos of ${size} px" >&2
        rm -rf "$work/p$size"
        $py scripts/bench/make_photos.py "$work/p$size" "$size" "$photos"
    fi
done
target/release/examples/make_model "$work/model224.safetensors" 224 32 >/dev/null
target/release/examples/make_model "$work/model64.safetensors" 64 32 >/dev/null
target/release/test --model-path "$work/model224.safetensors" --export-onnx "$work/model224.onnx" >/dev/null
# INT8: the same model with its activation ranges measured on the ~500 px photos.
target/release/test --model-path "$work/model224.safetensors" --int8-calibrate "$work/p500/images.csv" \
    --output-path "$work/model224_int8.safetensors" >/dev/null
# The network bench_forward times, for the Python runtimes (same seed, same weights).
BENCH_EXPORT_ONNX="$work/forward224.onnx" target/release/examples/bench_forward 224 1 1 fp32 >/dev/null
if [ ! -f "$work/train/data/train_data.csv" ]; then
    mkdir -p "$work/train"
    target/release/divide --input-file image_data.csv --output-dir "$work/train/data" --random-state 2025 >/dev/null
fi
cat > "$work/train/config.json" <<JSON
{"data": {"base_image_path": "$PWD/sample_images"},
 "model": {"pretrained": false, "freeze_backbone_epochs": 0, "dropout_rate": 0.2, "stochastic_depth_prob": 0.1},
 "training": {"batch_size": 32, "epochs": 2, "learning_rate": 0.002, "backbone_lr": 0.002},
 "augmentation": {"image_size": 96, "strength": "medium"},
 "validation": {"val_frequency": 100}, "logging": {"save_frequency": 0},
 "paths": {"data_dir": "data", "result_dir": "results", "model_dir": "models"},
 "system": {"num_workers": 2, "device": "cpu"}}
JSON

results=$(mktemp)
record() { echo "$1 $2" >> "$results"; }                     # name value
number() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -1; }   # the value after NAME=
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"; }
peak_kib() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }

for round in $(seq "$rounds"); do
    echo "round $round of $rounds" >&2
    fwd=target/release/examples/bench_forward
    record torchvision_b32 "$($py scripts/bench/forward_torchvision.py 224 32 3 | number images_per_second)"
    record ours_fp32_b32 "$($fwd 224 32 3 fp32 | number images_per_second)"
    record ours_bf16_b32 "$($fwd 224 32 3 bf16 | number images_per_second)"
    record torchvision_b1 "$($py scripts/bench/forward_torchvision.py 224 1 30 | number images_per_second)"
    record ours_fp32_b1 "$($fwd 224 1 30 fp32 | number images_per_second)"
    for size in 500 1600; do
        record "ours_csv_$size" "$(seconds target/release/test --model-path "$work/model224.safetensors" \
            --csv-path "$work/p$size/images.csv" --output-path "$work/ours_$size.csv")"
        record "reference_csv_$size" "$(seconds $py scripts/bench/reference_test.py "$work/model224.safetensors" \
            "$work/p$size/images.csv" "$work/reference_$size.csv")"
    done
    for size in 500 1600; do
        record "ours_int8_csv_$size" "$(seconds target/release/test --model-path "$work/model224_int8.safetensors" \
            --precision int8 --csv-path "$work/p$size/images.csv" --output-path "$work/ours_int8_$size.csv")"
    done
    record ours_csv_peak_kib "$(peak_kib target/release/test --model-path "$work/model224.safetensors" \
        --csv-path "$work/p1600/images.csv" --output-path "$work/ours_1600.csv")"
    out=$(cd "$work/train" && ../../release/train --config config.json 2>/dev/null)
    run=$(printf '%s\n' "$out" | sed -n 's/^run folder: //p')
    record ours_train "$(tail -1 "$work/train/$run/logs/metrics.csv" | awk -F, '{print $12}')"
    record reference_train "$($py scripts/bench/reference_train.py "$work/train/data/train_data.csv" sample_images 96 32 2 \
        | number images_per_second)"
    record bare_train "$($py scripts/bench/bare_train_loop.py 96 32 10 | number images_per_second)"
    record ours_plain_b32 "$($fwd 224 32 3 plain | number images_per_second)"
    onnx="$work/forward224.onnx"
    for b in "32 6" "1 100"; do
        set -- $b
        record "ov_ours_bf16_b$1" "$($fwd 224 "$1" "$2" openvino-bf16 | number images_per_second)"
        record "ov_python_bf16_b$1" "$($py scripts/bench/onnx_forward.py "$onnx" 224 "$1" "$2" openvino-bf16 | number images_per_second)"
        record "ov_ours_fp32_b$1" "$($fwd 224 "$1" "$2" openvino-fp32 | number images_per_second)"
        record "ov_ours_int8_b$1" "$($fwd 224 "$1" "$2" openvino-int8 | number images_per_second)"
        record "ov_python_fp32_b$1" "$($py scripts/bench/onnx_forward.py "$onnx" 224 "$1" "$2" openvino-f32 | number images_per_second)"
        record "ort_b$1" "$($py scripts/bench/onnx_forward.py "$onnx" 224 "$1" "$2" onnxruntime | number images_per_second)"
    done
    for size in 500 1600; do
        record "openvino_pipeline_$size" "$(seconds $py scripts/bench/openvino_pipeline.py "$work/model224.onnx" \
            "$work/p$size/images.csv" "$work/openvino_pipeline_$size.csv")"
    done
    for px in 64 224; do
        callers=$($py scripts/bench/concurrent_callers.py "$work/model$px.safetensors" sample_images 2>/dev/null)
        record "callers${px}_one_call" "$(echo "$callers" | sed -n 's/^one call of .*: \([0-9.]*\) images.*/\1/p')"
        record "callers${px}_eight" "$(echo "$callers" | sed -n 's/^8 threads.*: \([0-9.]*\) images.*/\1/p')"
        record "callers${px}_p95" "$(echo "$callers" | sed -n 's/.*p95 \([0-9.]*\) ms.*/\1/p')"
    done
    record api_peak_kib "$(peak_kib target/release/examples/backend_api "$work/model224.safetensors" "$work"/p1600/images/*.jpg)"
    for backbone in mobilenet_v3_large mobilenet_v3_small mobilenet_v2; do
        record "${backbone}_fp32" "$($fwd 224 32 3 fp32 $backbone | number images_per_second)"
        record "${backbone}_bf16" "$($fwd 224 32 3 bf16 $backbone | number images_per_second)"
    done
    record step_tuned "$(target/release/examples/bench_train_step 96 32 10 | number images_per_second)"
    record step_default_malloc "$(target/release/examples/bench_train_step 96 32 10 default-malloc | number images_per_second)"
    decode=$(target/release/examples/bench_decode "$work/p1600/images")
    record decode_full "$(echo "$decode" | sed -n 's/^full decode+resize \([0-9.]*\).*/\1/p')"
    record decode_scaled "$(echo "$decode" | sed -n 's/.*reduced-scale decode+resize \([0-9.]*\).*/\1/p')"
    record decode_pillow "$($py scripts/bench/decode_pillow.py "$work/p1600/images" 224 | number images_per_second)"
    screen=$(target/release/examples/bench_screen "$work/p1600/images")
    record screen_before "$(echo "$screen" | sed -n 's/.*before \([0-9.]*\).*/\1/p')"
    record screen_now "$(echo "$screen" | sed -n 's/.*now \([0-9.]*\) images.*/\1/p')"
done

python3 - "$results" "$rounds" "$photos" <<'PY'
import statistics, sys
values = {}
for line in open(sys.argv[1]):
    name, value = line.split()
    values.setdefault(name, []).append(float(value))
m = {k: statistics.median(v) for k, v in values.items()}
rounds, photos = sys.argv[2], sys.argv[3]
rows = [
    ("forward fp32, 224 px, batch 32 (images/s)", m["ours_fp32_b32"], m["torchvision_b32"], m["ours_fp32_b32"] / m["torchvision_b32"], "≥ 2.0"),
    ("forward fp32, 224 px, batch 1 (images/s)", m["ours_fp32_b1"], m["torchvision_b1"], m["ours_fp32_b1"] / m["torchvision_b1"], "≥ 1.8"),
    ("forward bf16 vs torchvision fp32, batch 32 (images/s)", m["ours_bf16_b32"], m["torchvision_b32"], m["ours_bf16_b32"] / m["torchvision_b32"], "≥ 3.5"),
    (f"test --csv-path, {photos} ~500 px JPEGs (s, process start to CSV)", m["ours_csv_500"], m["reference_csv_500"], m["reference_csv_500"] / m["ours_csv_500"], "≥ 3"),
    (f"test --csv-path, {photos} ~1600 px JPEGs (s)", m["ours_csv_1600"], m["reference_csv_1600"], m["reference_csv_1600"] / m["ours_csv_1600"], "≥ 5"),
    ("training, 96 px, batch 32, vs the Python system's loop (images/s)", m["ours_train"], m["reference_train"], m["ours_train"] / m["reference_train"], "≥ 2.5"),
    ("training, vs a bare eager loop on random tensors (images/s)", m["ours_train"], m["bare_train"], m["ours_train"] / m["bare_train"], "≥ 1.6"),
    ("screening ~1600 px JPEGs, vs full decoding as before (images/s)", m["screen_now"], m["screen_before"], m["screen_now"] / m["screen_before"], "≥ 5"),
]
print(f"medians of {rounds} rounds; reference = torchvision eager / Python-system pipeline / bare PyTorch loop / earlier screening")
print("| measurement | ours | reference | ratio | target |")
print("| --- | --- | --- | --- | --- |")
for name, ours, ref, ratio, target in rows:
    print(f"| {name} | {ours:.2f} | {ref:.2f} | {ratio:.2f}× | {target} |")
print(f"| peak RSS of test --csv-path, 224 px, batch 32 (MiB) | {m['ours_csv_peak_kib'] / 1024:.0f} | | | ≤ 600 |")
print()
print("serving: the same network in every engine, 224 px (images/s); ours from decoded images, normalising included, the Python runtimes from a normalised array")
print("| measurement | ours (OpenVINO engine) | reference | ratio | target |")
print("| --- | --- | --- | --- | --- |")
serving = [
    ("forward bf16, batch 32, vs OpenVINO bf16 in Python", "ov_ours_bf16_b32", "ov_python_bf16_b32", "≥ 1.0"),
    ("forward bf16, batch 1, vs OpenVINO bf16 in Python", "ov_ours_bf16_b1", "ov_python_bf16_b1", "≥ 1.0"),
    ("forward fp32, batch 32, vs OpenVINO fp32 in Python", "ov_ours_fp32_b32", "ov_python_fp32_b32", ""),
    ("forward fp32, batch 1, vs OpenVINO fp32 in Python", "ov_ours_fp32_b1", "ov_python_fp32_b1", ""),
    ("forward bf16, batch 32, vs ONNX Runtime fp32 in Python", "ov_ours_bf16_b32", "ort_b32", ""),
    ("forward bf16, batch 1, vs ONNX Runtime fp32 in Python", "ov_ours_bf16_b1", "ort_b1", ""),
    ("forward bf16, batch 32, vs torchvision eager fp32", "ov_ours_bf16_b32", "torchvision_b32", ""),
    ("forward bf16, batch 1, vs torchvision eager fp32", "ov_ours_bf16_b1", "torchvision_b1", ""),
    ("forward int8, batch 32, vs OpenVINO bf16 in Python", "ov_ours_int8_b32", "ov_python_bf16_b32", ""),
    ("forward int8, batch 1, vs OpenVINO bf16 in Python", "ov_ours_int8_b1", "ov_python_bf16_b1", ""),
    ("forward int8 vs our bf16, batch 32", "ov_ours_int8_b32", "ov_ours_bf16_b32", ""),
    ("forward int8 vs our fp32, batch 32", "ov_ours_int8_b32", "ov_ours_fp32_b32", ""),
]
for name, ours, ref, target in serving:
    print(f"| {name} | {m[ours]:.1f} | {m[ref]:.1f} | {m[ours] / m[ref]:.2f}× | {target} |")
for size, target in (("500", "≥ 1.5"), ("1600", "≥ 1.5")):
    ours, ref = m[f"ours_csv_{size}"], m[f"openvino_pipeline_{size}"]
    print(f"| test --csv-path, {photos} ~{size} px JPEGs, vs PIL (draft) + OpenVINO bf16 in Python (s) | {ours:.2f} | {ref:.2f} | {ref / ours:.2f}× | {target} |")
for size, target in (("500", "≥ 2.0"), ("1600", "")):
    ours, ref = m[f"ours_int8_csv_{size}"], m[f"openvino_pipeline_{size}"]
    print(f"| test --csv-path --precision int8, {photos} ~{size} px JPEGs, vs PIL (draft) + OpenVINO bf16 in Python (s) | {ours:.2f} | {ref:.2f} | {ref / ours:.2f}× | {target} |")
for px in ("64", "224"):
    eight, one = m[f"callers{px}_eight"], m[f"callers{px}_one_call"]
    print(f"| 8 threads of single-image calls vs one call of all, Python module, {px} px model (images/s) | {eight:.0f} | {one:.0f} | {eight / one:.2f}× | ≥ 0.8 |")
    print(f"| p95 latency of those single-image calls, {px} px (ms) | {m[f'callers{px}_p95']:.1f} | | | |")
print(f"| peak RSS of the Rust API (backend_api) predicting {photos} ~1600 px JPEGs, 224 px (MiB) | {m['api_peak_kib'] / 1024:.0f} | | | |")
print()
print("what single optimisations contribute (ours with / without it)")
print("| optimisation | with | without | ratio |")
print("| --- | --- | --- | --- |")
parts = [
    ("BatchNorm folded + channels-last, forward 224 px b32 (images/s)", "ours_fp32_b32", "ours_plain_b32"),
    ("bf16 on AVX512-BF16 over fused fp32, forward b32 (images/s)", "ours_bf16_b32", "ours_fp32_b32"),
    ("reduced-DCT-scale JPEG decode + resize to 224, ~1600 px (images/s)", "decode_scaled", "decode_full"),
    ("the same, ours (libjpeg-turbo, ≥ 2× the input) vs Pillow `draft` (≥ 1×), one core (images/s)", "decode_scaled", "decode_pillow"),
    ("glibc allocator kept from trimming, training step 96 px b32 (images/s)", "step_tuned", "step_default_malloc"),
    ("our training step vs a bare eager PyTorch step, random tensors (images/s)", "step_tuned", "bare_train"),
]
for name, a, b in parts:
    print(f"| {name} | {m[a]:.2f} | {m[b]:.2f} | {m[a] / m[b]:.2f}× |")
print()
print("backbones: our inference forward, 224 px, batch 32 (images/s; ratio to torchvision's EfficientNet-B0 eager fp32)")
print("| backbone | fp32 | bf16 |")
print("| --- | --- | --- |")
for backbone, fp32, bf16 in [("efficientnet_b0", "ours_fp32_b32", "ours_bf16_b32")] + [
    (b, f"{b}_fp32", f"{b}_bf16") for b in ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2")
]:
    ref = m["torchvision_b32"]
    print(f"| {backbone} | {m[fp32]:.1f} ({m[fp32] / ref:.1f}×) | {m[bf16]:.1f} ({m[bf16] / ref:.1f}×) |")
PY
rm -f "$results"
echo
# Two jobs sharing the machine: compute threads shared by measurement vs fixed at all cores.
scripts/bench/contention.sh "$rounds"
