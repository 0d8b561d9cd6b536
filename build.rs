// Embeds an rpath to libtorch so the binaries run without LD_LIBRARY_PATH.
// torch-sys exports its lib folder only to direct dependents, hence the direct dependency.
fn main() {
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        link_cuda_into_tests(&lib_dir);
    }
}

/// Tests link libtorch's CUDA half outright, so that a CUDA test sees the GPU whatever ran
/// first in its process; binaries, examples and the Python module load it when a device other
/// than the CPU may be used (`device::load_cuda_support`), since linking it costs every
/// CPU-only process ~390 MB at start. `--as-needed` would drop it: nothing calls into it.
fn link_cuda_into_tests(lib_dir: &str) {
    let cuda = std::path::Path::new(lib_dir).join("libtorch_cuda.so");
    if cuda.is_file() {
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed,{},--as-needed", cuda.display());
    }
}
