#!/usr/bin/env bash
# Set-up if needed, then every test (Rust unit and integration tests, the torchvision
# parity test and the end-to-end test of the three binaries). Release profile: it reuses
# the set-up's build instead of compiling libtorch bindings a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace "$@"

# The Python module as a backend imports it (built into the venv by set-up).
echo "== Python module imgtype"
.venv/bin/python tests/python/test_imgtype_module.py

# The GPU check: on a machine without a GPU it says so and exits 0; the dry run takes every
# step on the CPU at toy sizes (the CUDA tests skip), so the script is checked where no GPU is.
echo "== GPU check (scripts/gpu_check.sh)"
scripts/gpu_check.sh target/gpu_check
scripts/gpu_check.sh --dry-run-on-cpu target/gpu_check_dry_run > /dev/null

# The prediction API alone, as a backend embeds it: the inference crate without its default
# features builds and links the backend example. Crates hold the rest (no plotting, training
# or terminal-front-end crate is a dependency of imgtype-infer); this checks TLS stays out.
echo "== inference-only build (imgtype-infer --no-default-features)"
cargo build --release --quiet -p imgtype-infer --no-default-features --example backend_api
linked=$(cargo tree -p imgtype-infer --no-default-features -e normal --prefix none)
for crate in ureq rustls plotters indicatif; do
    if grep -q "^$crate v" <<<"$linked"; then
        echo "error: imgtype-infer without default features depends on $crate" >&2
        exit 1
    fi
done
echo "inference-only build: ok (none of ureq, rustls, plotters, indicatif)"
