// Embeds an rpath to libtorch for this crate's tests and examples (build/libtorch_link.rs),
// and records the libtorch version for run metadata.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = link_libtorch()
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

include!("../../build/libtorch_link.rs");
