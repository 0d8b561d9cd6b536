//! Sharding for schedulers with an array index (a Kubernetes Indexed Job, a Slurm array):
//! `--shard K/N` predicts rows i with i mod N = K and names its outputs `*.shard-K-of-N.*`
//! (`test --merge-shards` puts them back together).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;

    /// `K/N` with 0 ≤ K < N (K as Kubernetes' JOB_COMPLETION_INDEX or a Slurm array index).
    fn from_str(text: &str) -> Result<Self> {
        let (k, n) = text.split_once('/').ok_or_else(|| anyhow!("shard `{text}` is not K/N"))?;
        let index: usize = k.trim().parse().map_err(|_| anyhow!("shard `{text}`: K is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| anyhow!("shard `{text}`: N is not a number"))?;
        if count == 0 || index >= count {
            bail!("shard `{text}`: need 0 <= K < N");
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn includes(&self, row: usize) -> bool {
        row % self.count == self.index
    }

    pub fn tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// `dir/results.csv` → `dir/results.shard-K-of-N.csv` (unchanged without a shard).
pub fn shard_file_name(path: &Path, shard: Option<Shard>) -> PathBuf {
    let Some(shard) = shard else { return path.to_path_buf() };
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", shard.tag(), ext.to_string_lossy()),
        None => format!("{stem}.{}", shard.tag()),
    };
    path.with_file_name(name)
}

/// The shard a file name says it holds (`*.shard-K-of-N.*`).
pub fn shard_of_file(path: &Path) -> Option<Shard> {
    let name = path.file_name()?.to_string_lossy().to_string();
    let start = name.find(".shard-")? + ".shard-".len();
    let rest = &name[start..];
    let (k, rest) = rest.split_once("-of-")?;
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    format!("{k}/{n}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_names() {
        let shard: Shard = "2/5".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 5 });
        assert!(shard.includes(7) && !shard.includes(8));
        for bad in ["5/5", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let name = shard_file_name(Path::new("out/preds.csv"), Some(shard));
        assert_eq!(name, Path::new("out/preds.shard-2-of-5.csv"));
        assert_eq!(shard_of_file(&name), Some(shard));
        assert_eq!(shard_file_name(Path::new("x.csv"), None), Path::new("x.csv"));
    }
}
