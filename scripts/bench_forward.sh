#!/usr/bin/env bash
# Eval-mode forward speed, ours vs torchvision, same machine, same run, alternating sides.
# usage: scripts/bench_forward.sh [size=224] [batch=32] [iters=3] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-224}; batch=${2:-32}; iters=${3:-3}; rounds=${4:-2}
cargo build --release --quiet -p imgtype --example bench_forward
rust_total=0; torch_total=0
for round in $(seq "$rounds"); do
    r=$(target/release/examples/bench_forward "$size" "$batch" "$iters"); echo "round $round: $r"
    t=$(.venv/bin/python scripts/bench_forward.py "$size" "$batch" "$iters"); echo "round $round: $t"
    rust_total=$(python3 -c "print($rust_total + float('$r'.split('=')[1].split()[0]))")
    torch_total=$(python3 -c "print($torch_total + float('$t'.split('=')[1].split()[0]))")
done
python3 -c "r=$rust_total/$rounds; t=$torch_total/$rounds; print(f'mean images/s: rust {r:.2f}, torchvision {t:.2f}, ratio rust/torchvision {r/t:.3f}')"
