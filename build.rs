// Embeds an rpath to libtorch so the binaries run without LD_LIBRARY_PATH.
// torch-sys exports its lib folder only to direct dependents, hence the direct dependency.
fn main() {
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        link_cuda_into_tests(&lib_dir);
    }
}

include!("crates/imgtype/build_cuda_link.rs");
