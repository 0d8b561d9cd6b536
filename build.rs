// The binaries run without LD_LIBRARY_PATH (see build/libtorch_link.rs).
fn main() {
    link_libtorch();
}

include!("build/libtorch_link.rs");
