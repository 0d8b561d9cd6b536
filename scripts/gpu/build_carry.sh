#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh runs on a GPU machine, into one folder: the binaries,
# bench_gpu, the test executables that hold CUDA tests, and the Python module.
#
#   scripts/gpu/build_carry.sh --native DEST
#       with the project's libtorch (scripts/setup.sh): for a GPU machine that builds for itself.
#   scripts/gpu/build_carry.sh --torch VERSION [DEST=.gpu-carry in the repository]
#       against PyTorch VERSION's libtorch (the wheel from PyPI, unpacked under target/), for a
#       machine that has that PyTorch but no cargo and no network, as the GPU machines lent to
#       this project (PyTorch 2.11.0 there). tch 0.26 wants 2.13.0: torch-sys is copied and the
#       few operators an older libtorch lacks are stubbed (scripts/gpu/patch_torch_sys.py).
#       Stripped and under 64 MiB, so that the device tool can carry it.
set -euo pipefail
usage="usage: build_carry.sh --native DEST | --torch VERSION [DEST]"
case "${1:-}" in
    --native) [ $# -eq 2 ] && [ -n "$2" ] || { echo "$usage" >&2; exit 2; }; torch_version= dest_arg=$2 ;;
    --torch) [ $# -ge 2 ] && [ $# -le 3 ] && [ -n "$2" ] || { echo "$usage" >&2; exit 2; }; torch_version=$2 dest_arg=${3:-} ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
# DEST is the caller's (relative to where they are), .gpu-carry in the repository by default.
if [ -n "$dest_arg" ]; then
    dest=$(realpath -m -- "$dest_arg")
else
    dest=$(realpath -m -- "$(dirname "$0")/../../.gpu-carry")
fi
cd "$(dirname "$0")/../.."
root=$(pwd)
log() { printf '[build_carry] %s\n' "$*" >&2; }
# DEST is replaced, so it must be new, empty, or an earlier output of this script (it holds
# .build_carry): checked before a long build, never a folder of the user's.
marker=.build_carry
if [ -e "$dest" ] && { [ ! -d "$dest" ] || { [ -n "$(ls -A "$dest")" ] && [ ! -f "$dest/$marker" ]; }; }; then
    echo "build_carry: $dest is not a new or empty folder, nor one this script wrote (no $marker in it)" >&2
    exit 2
fi
case "$root/" in
    "$dest"/*) echo "build_carry: DEST ($dest) may not hold the repository" >&2; exit 2 ;;
esac

cargo_args=(--release)
if [ -n "$torch_version" ]; then
    scripts/setup.sh >/dev/null   # the venv: Python to unpack with, and the CUDA libraries to link against
    work="$root/target/carry-torch-$torch_version"
    site="$work/site"
    if [ ! -f "$site/torch/version.py" ]; then
        log "fetching torch==$torch_version from PyPI (libtorch only; no install)"
        mkdir -p "$work/wheel" "$site"
        .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "torch==$torch_version"
        .venv/bin/python -m zipfile -e "$work"/wheel/torch-*.whl "$site"
    fi
    # libtorch_cuda.so finds its CUDA libraries at $ORIGIN/../../nvidia: the venv's (same CUDA 13).
    ln -sfn "$root/.venv/lib/python3"*/site-packages/nvidia "$site/nvidia"
    if [ ! -f "$work/torch-sys/.patched" ]; then
        registry_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/torch-sys-0.26.0 | head -1)
        .venv/bin/python scripts/gpu/patch_torch_sys.py "$registry_copy" "$work/torch-sys" "$site/torch/include"
        touch "$work/torch-sys/.patched"
    fi
    export LIBTORCH="$site/torch" LIBTORCH_CXX11_ABI=1 LIBTORCH_BYPASS_VERSION_CHECK=1
    # Built here, without a GPU, for a machine with one: the tests link libtorch_cuda (build.rs).
    export IMGTYPE_LINK_CUDA_INTO_TESTS=1
    cargo_args+=(--target-dir "$work/target" --config "patch.crates-io.torch-sys.path=\"$work/torch-sys\"")
    # The patch rewrites Cargo.lock's torch-sys entry; the tracked lock file is put back after.
    cp Cargo.lock "$work/Cargo.lock.tracked"
    trap 'cp "$work/Cargo.lock.tracked" "$root/Cargo.lock"' EXIT
    target_dir="$work/target/release"
else
    scripts/setup.sh >/dev/null
    target_dir="$root/target/release"
fi

log "building binaries, bench_gpu and the test executables with CUDA tests${torch_version:+ against torch $torch_version}"
cargo build "${cargo_args[@]}" --quiet --bins
if [ -n "$torch_version" ]; then
    cargo build "${cargo_args[@]}" --quiet -p imgtype-python
    python_module="$target_dir/libimgtype_python.so"
else
    # The module scripts/setup.sh built in place (maturin develop): building it again with
    # plain cargo would compile the core library once more under other flags.
    python_module=crates/python/imgtype/imgtype.abi3.so
fi
cargo build "${cargo_args[@]}" --quiet -p imgtype --example bench_gpu --example bench_decode
tests=(fused freeze losses_optim inference train_features)
test_flags=()
for t in "${tests[@]}"; do test_flags+=(--test "$t"); done
executables=$(cargo test "${cargo_args[@]}" --workspace --no-run --message-format=json "${test_flags[@]}" 2>/dev/null \
    | .venv/bin/python -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])')

rm -rf "$dest"
mkdir -p "$dest/python/imgtype"
touch "$dest/$marker"
while read -r name path; do
    cp "$path" "$dest/$name"
done <<<"$executables"
for t in "${tests[@]}"; do
    [ -x "$dest/$t" ] || { log "no test executable $t was built"; exit 1; }
done
cp "$target_dir"/{train,test,divide} "$target_dir"/examples/{bench_gpu,bench_decode} "$dest/"
cp "$python_module" "$dest/python/imgtype/imgtype.abi3.so"
cp crates/python/imgtype/__init__.py "$dest/python/imgtype/"
strip "$dest"/* 2>/dev/null || true
if [ -n "$torch_version" ]; then
    # Only the module cargo built: strip misaligns the load segments of the one maturin built,
    # whose rpath patchelf set, for some layouts ("ELF load command address/offset not
    # page-aligned" on import, seen in CI).
    strip "$dest/python/imgtype/imgtype.abi3.so"
fi
printf '%s\n' "${torch_version:-$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')}" > "$dest/TORCH_VERSION"
if [ -n "$torch_version" ]; then
    # One compressed file, to travel under the device tool's 64 MiB; gpu_check.sh unpacks it.
    tar -C "$dest" --exclude TORCH_VERSION --exclude "$marker" -cf - . | xz -T2 -6 > "$dest.bundle.tar.xz"
    find "$dest" -mindepth 1 ! -name TORCH_VERSION ! -name "$marker" -exec rm -rf {} +
    mv "$dest.bundle.tar.xz" "$dest/bundle.tar.xz"
fi
log "$dest: $(du -sh "$dest" | cut -f1) (libtorch ${torch_version:-of the venv})"
