#!/usr/bin/env bash
# How well `train --cross-validate` finds planted label faults, against cleanlab on the same
# out-of-fold probabilities, and what the cross-validation costs against one training run.
# For each seed: the sample's split files with FRACTION of the images moved to another class
# (scripts/bench/planted_label_issues.py), the demo config cross-validated in FOLDS folds,
# precision in the top N and recall in the top 2N (N planted) of our ranking and of cleanlab's.
# PRODUCTS: a synthetic catalogue of that many products made by scripts/make_sample_data.py
# (seed 11; 384 products are about 1,700 images) instead of the bundled sample; with
# GENERATOR=b, by scripts/make_catalogue_b.py (seed 5; its own drawing code, 300-800 px
# photos, 360 products are about 1,750 images), whose planted copies are then scored too
# (`divide --find-duplicates`, scripts/bench/score_duplicates.py). CATALOGUE_SEED=S draws
# the catalogue with seed S instead (its own work folder). REPEATS=R cross-validates with
# `--repeats R` (R times the training; the ratio printed is against one run still),
# NEIGHBOURS=K judges with `--neighbours K`, and EPOCHS=E, SIZE=PX and AUGMENTATION=PRESET
# train every model (the one run's too) for E epochs, at PX pixels (augmentation.image_size)
# or with that augmentation.strength (none, light, medium, strong) instead of the demo config's.
# usage: scripts/label_issues_bench.sh [SEEDS="1 2 3"] [FRACTION=0.06] [FOLDS=5] [PRODUCTS] [GENERATOR=sample|b]
#        (about 2 minutes per seed on 2 cores with the sample, 9 with 384 products)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1 2 3}
fraction=${2:-0.06}
folds=${3:-5}
products=${4:-}
generator=${5:-sample}
catalogue_seed=${CATALOGUE_SEED:-}
repeats=${REPEATS:-1}
neighbours=${NEIGHBOURS:-0}
# Checked before anything is made: they name the work folder that is emptied below.
for name in CATALOGUE_SEED REPEATS NEIGHBOURS EPOCHS SIZE; do
    value=${!name:-}
    if [ -n "$value" ] && ! [[ "$value" =~ ^[0-9]{1,6}$ ]]; then
        echo "error: $name=$value is not a whole number" >&2; exit 2
    fi
done
case "${AUGMENTATION:-medium}" in
    none | light | medium | strong) ;;
    *) echo "error: AUGMENTATION=$AUGMENTATION is not a preset (none, light, medium, strong)" >&2; exit 2 ;;
esac
for argument in "$fraction" "$folds" "$products"; do
    if [[ "$argument" == */* || "$argument" == *..* ]]; then
        echo "error: argument $argument is not a number" >&2; exit 2
    fi
done
scripts/setup.sh >&2
py=.venv/bin/python
work=target/label_issues_bench${products:+_$products}${products:+_$generator}${catalogue_seed:+_seed$catalogue_seed}${REPEATS:+_repeats$REPEATS}${EPOCHS:+_epochs$EPOCHS}${SIZE:+_size$SIZE}${AUGMENTATION:+_$AUGMENTATION}
rm -rf "$work" && mkdir -p "$work"
catalogue=image_data.csv
images=$PWD/sample_images
if [ -n "$products" ]; then
    case "$generator" in
        sample) "$py" scripts/make_sample_data.py --products "$products" --seed "${catalogue_seed:-11}" --out "$work/catalogue" >&2 ;;
        b) "$py" scripts/make_catalogue_b.py --products "$products" --seed "${catalogue_seed:-5}" --out "$work/catalogue" >&2 ;;
        *) echo "unknown generator $generator (sample, b)" >&2; exit 2 ;;
    esac
    catalogue=$work/catalogue/image_data.csv
    images=$PWD/$work/catalogue/sample_images
fi
duplicates=()
if [ -f "$work/catalogue/planted_duplicates.csv" ]; then
    duplicates=(--find-duplicates --image-base-path "$images")
fi
target/release/divide --input-file "$catalogue" --output-dir "$work/data" --random-state 2025 "${duplicates[@]}" >/dev/null
if [ ${#duplicates[@]} -gt 0 ]; then
    echo "duplicates: $("$py" scripts/bench/score_duplicates.py "$work/catalogue/planted_duplicates.csv" "$work/data/duplicates.csv")"
fi
config_for() {
    "$py" -c 'import json, os, sys; c = json.load(open("configs/demo.json")); c["paths"] = {"data_dir": sys.argv[1], "result_dir": sys.argv[2]}; c["data"].update(csv_path=sys.argv[4], base_image_path=sys.argv[5]); e = os.environ.get("EPOCHS"); e and c["training"].update(epochs=int(e)); px = os.environ.get("SIZE"); px and c["augmentation"].update(image_size=int(px)); a = os.environ.get("AUGMENTATION"); a and c["augmentation"].update(strength=a); json.dump(c, open(sys.argv[3], "w"))' "$@" "$catalogue" "$images"
}
config_for "$work/data" "$work/one_run" "$work/one_run.json"
start=$(date +%s.%N)
if ! target/release/train --config "$work/one_run.json" >/dev/null 2>"$work/one_run.err"; then
    echo "error: the one training run failed ($work/one_run.err):" >&2; tail -5 "$work/one_run.err" >&2; exit 1
fi
one_run=$(echo "$(date +%s.%N) - $start" | bc)
echo "one training run of the demo config${EPOCHS:+ at $EPOCHS epochs}${SIZE:+ at $SIZE px}${AUGMENTATION:+ with $AUGMENTATION augmentation}: ${one_run} s"
for seed in $seeds; do
    dir="$work/seed$seed"
    "$py" scripts/bench/planted_label_issues.py plant "$work/data" "$dir/data" "$fraction" "$seed"
    config_for "$dir/data" "$dir" "$dir/config.json"
    start=$(date +%s.%N)
    if ! target/release/train --config "$dir/config.json" --cross-validate "$folds" --repeats "$repeats" --neighbours "$neighbours" --cv-dir "$dir/cv" > "$dir/train.out" 2> "$dir/train.err"; then
        echo "error: the cross-validation failed ($dir/train.err):" >&2; tail -5 "$dir/train.err" >&2; exit 1
    fi
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    echo "seed $seed: cross-validation ${seconds} s = $(echo "scale=2; $seconds / $one_run" | bc)x one run"
    "$py" scripts/bench/planted_label_issues.py score "$dir/cv" "$dir/data/planted.csv" | tee "$dir/score.json"
    # Each repeat alone, side by side: a copy of its folder judged as a one-repeat cross-validation.
    for ((r = 1; r <= repeats && repeats > 1; r++)); do
        alone="$dir/repeat${r}_alone"
        source_dir="$dir/cv"; [ "$r" -gt 1 ] && source_dir="$dir/cv/repeat_$r"
        rm -rf "$alone" && cp -r "$source_dir" "$alone" && rm -rf "$alone"/repeat_*
        "$py" -c 'import json, sys; p = sys.argv[1]; d = json.load(open(p)); d["repeats"] = 1; json.dump(d, open(p, "w"))' "$alone/cv_plan.json"
        target/release/train --summarize "$alone" --neighbours "$neighbours" >/dev/null 2>&1
        echo "repeat $r alone: $("$py" scripts/bench/planted_label_issues.py score "$alone" "$dir/data/planted.csv")"
        rm -rf "$alone"
    done
done
