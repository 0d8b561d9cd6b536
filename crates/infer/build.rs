// Embeds an rpath to libtorch for this crate's tests and examples (build/libtorch_link.rs),
// and records where the `openvino` wheel's libraries are: it installs beside torch in the
// same site-packages.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let openvino_libs = link_libtorch()
        .and_then(|lib| std::path::Path::new(&lib).ancestors().nth(2).map(|site| site.join("openvino/libs")))
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=IMGTYPE_OPENVINO_LIBS={openvino_libs}");
}

include!("../../build/libtorch_link.rs");
