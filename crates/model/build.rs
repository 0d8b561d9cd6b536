// Embeds an rpath to libtorch for this crate's tests (build/libtorch_link.rs) and generates
// the ONNX messages.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    link_libtorch();
    compile_onnx_schema();
}

/// The ONNX messages (`onnx::proto`) from the vendored ONNX schema, into `OUT_DIR`.
fn compile_onnx_schema() {
    println!("cargo:rerun-if-changed=proto/onnx.proto3");
    let descriptors = protox::compile(["onnx.proto3"], ["proto"]).expect("proto/onnx.proto3 compiles");
    prost_build::Config::new().compile_fds(descriptors).expect("ONNX messages generate");
}

include!("../../build/libtorch_link.rs");
