//! Result folders named like the Python system's: `run_YYYYMMDD_HHMMSS_<8 hex of a uuid4>`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub fn run_name() -> String {
    named("run")
}

/// `<prefix>_YYYYMMDD_HHMMSS_<8 hex>` (a cross-validation's `cv_…` folder).
pub fn named(prefix: &str) -> String {
    let stamp = chrono::Local::now().format("%Y%m%d_%H%M%S");
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{stamp}_{}", &id[..8])
}

/// Creates `parent/run_…/` and the given sub-folders inside it.
pub fn create_run_dir(parent: &Path, subdirs: &[&str]) -> Result<PathBuf> {
    let dir = parent.join(run_name());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
    for sub in subdirs {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_name_has_timestamp_and_8_hex() {
        let name = super::run_name();
        let parts: Vec<&str> = name.split('_').collect();
        assert_eq!(parts.len(), 4, "{name}");
        assert_eq!(parts[0], "run");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 6);
        assert_eq!(parts[3].len(), 8);
        assert!(parts[3].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
