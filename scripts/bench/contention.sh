#!/usr/bin/env bash
# Two training jobs sharing this machine, against one alone, in both configurations side by
# side: compute threads shared by measurement (ours, the default) and fixed at all cores
# (OMP_NUM_THREADS=$(nproc): what every job did before, and what libtorch does by default).
# Each job is `bench_train_step SIZE BATCH STEPS` (training steps on random tensors); the two
# of a pair start together. Alternating configurations, ROUNDS rounds, medians.
# usage: scripts/bench/contention.sh [ROUNDS=3] [SIZE=64] [BATCH=32] [STEPS=30]   (run by scripts/bench.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
size=${2:-64}
batch=${3:-32}
steps=${4:-30}
step=target/release/examples/bench_train_step
[ -x "$step" ] || cargo build --release --quiet -p imgtype --examples
cores=$(nproc)
results=$(mktemp)
rate() { sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p'; }
solo() { env "$@" "$step" "$size" "$batch" "$steps" | rate; }
pair() {
    local a b
    a=$(mktemp)
    b=$(mktemp)
    env "$@" "$step" "$size" "$batch" "$steps" > "$a" &
    env "$@" "$step" "$size" "$batch" "$steps" > "$b" &
    wait
    python3 -c "print($(rate < "$a") + $(rate < "$b"))"
    rm -f "$a" "$b"
}
for round in $(seq "$rounds"); do
    echo "contention round $round of $rounds" >&2
    echo "shared_solo $(solo)" >> "$results"
    echo "fixed_solo $(solo OMP_NUM_THREADS="$cores")" >> "$results"
    echo "shared_pair $(pair)" >> "$results"
    echo "fixed_pair $(pair OMP_NUM_THREADS="$cores")" >> "$results"
done
python3 - "$results" "$rounds" "$size" "$batch" "$cores" <<'PY'
import statistics, sys
values = {}
for line in open(sys.argv[1]):
    name, value = line.split()
    values.setdefault(name, []).append(float(value))
m = {k: statistics.median(v) for k, v in values.items()}
rounds, size, batch, cores = sys.argv[2:6]
print(f"two training jobs on {cores} cores (bench_train_step {size} px, batch {batch}; images/s, medians of {rounds} rounds)")
print("| compute threads | one job alone | two jobs together (sum) | together / alone | alone vs fixed |")
print("| --- | --- | --- | --- | --- |")
for name, key in (("shared by measurement (default)", "shared"), (f"fixed at {cores} (OMP_NUM_THREADS={cores})", "fixed")):
    alone, together = m[f"{key}_solo"], m[f"{key}_pair"]
    print(f"| {name} | {alone:.1f} | {together:.1f} | {together / alone:.2f}× | {alone / m['fixed_solo']:.2f}× |")
PY
rm -f "$results"
