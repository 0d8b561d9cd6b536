// Embeds an rpath to libtorch so binaries, tests and examples run without LD_LIBRARY_PATH
// (torch-sys exports its lib folder only to direct dependents, hence the direct dependency),
// records the libtorch version for run metadata, and generates the ONNX messages.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib_dir) = &lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        link_cuda_into_tests(lib_dir);
    }
    let version = lib_dir
        .map(std::path::PathBuf::from)
        .and_then(|lib| lib.parent().map(|p| p.to_path_buf()))
        .and_then(|torch| {
            let from_python = std::fs::read_to_string(torch.join("version.py")).ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("__version__ = "))
                    .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
            });
            from_python
                .or_else(|| std::fs::read_to_string(torch.join("build-version")).ok().map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMGTYPE_LIBTORCH_VERSION={version}");
    // The `openvino` wheel installs beside torch in the same site-packages.
    let openvino_libs = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| std::path::Path::new(&lib).ancestors().nth(2).map(|site| site.join("openvino/libs")))
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=IMGTYPE_OPENVINO_LIBS={openvino_libs}");
    compile_onnx_schema();
}

/// The ONNX messages (`model::onnx::proto`) from the vendored ONNX schema, into `OUT_DIR`.
fn compile_onnx_schema() {
    println!("cargo:rerun-if-changed=proto/onnx.proto3");
    let descriptors = protox::compile(["onnx.proto3"], ["proto"]).expect("proto/onnx.proto3 compiles");
    prost_build::Config::new().compile_fds(descriptors).expect("ONNX messages generate");
}

/// On a machine with an NVIDIA driver (or with IMGTYPE_LINK_CUDA_INTO_TESTS=1, as
/// scripts/gpu/build_carry.sh builds for one), tests link libtorch's CUDA half outright, so a
/// CUDA test sees the GPU whatever ran first in its process (libtorch keeps its first answer to
/// "is there CUDA?"). Elsewhere they do not: it would add ~390 MB to every test process, and
/// a child's peak memory as the kernel reports it includes its parent's at the fork. Binaries
/// and the Python module load it at run time (`device::load_cuda_support`). `--as-needed`
/// would drop it anyway: nothing calls into it.
fn link_cuda_into_tests(lib_dir: &str) {
    println!("cargo:rerun-if-env-changed=IMGTYPE_LINK_CUDA_INTO_TESTS");
    let asked = std::env::var("IMGTYPE_LINK_CUDA_INTO_TESTS").is_ok_and(|v| v == "1");
    let driver = ["/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let cuda = std::path::Path::new(lib_dir).join("libtorch_cuda.so");
    if (asked || driver) && cuda.is_file() {
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed,{},--as-needed", cuda.display());
    }
}
