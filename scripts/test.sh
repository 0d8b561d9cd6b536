#!/usr/bin/env bash
# Set-up if needed, then every test (Rust unit and integration tests, the torchvision
# parity test and the end-to-end test of the three binaries). Release profile: it reuses
# the set-up's build instead of compiling libtorch bindings a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace "$@"
