// Embeds an rpath to libtorch so binaries, tests and examples run without LD_LIBRARY_PATH
// (torch-sys exports its lib folder only to direct dependents, hence the direct dependency),
// and records the libtorch version for run metadata.
fn main() {
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib_dir) = &lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
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
}
