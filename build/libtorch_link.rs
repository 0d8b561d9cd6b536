// Shared by the build scripts of every package whose binaries, tests or examples link
// libtorch (`include!`d): the root package, imgtype-model, imgtype-infer and imgtype.

/// Embeds an rpath to libtorch so what this package links runs without LD_LIBRARY_PATH, and
/// returns libtorch's lib folder. torch-sys exports it only to direct dependents, hence each
/// such package's direct dependency on torch-sys.
#[allow(dead_code)]
fn link_libtorch() -> Option<String> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok()?;
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    link_cuda_into_tests(&lib_dir);
    Some(lib_dir)
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
