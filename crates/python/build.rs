// The module finds libtorch without LD_LIBRARY_PATH: first beside it in site-packages, as
// torch's own wheel installs it (`$ORIGIN/../torch/lib`), else where this build found it.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
