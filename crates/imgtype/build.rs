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

include!("build_cuda_link.rs");
