//! Where image bytes come from. A key is resolved, as in the Python system, against
//! `data.base_image_path` (a local folder), else `data.base_image_url`, else
//! `https://$S3_CLOUDFRONT_DOMAIN/<key>`; absolute `http(s)://` URLs and absolute paths
//! are used as they are. Remote fetches have a timeout and retries, and an optional
//! on-disk cache keyed by URL (`data.image_cache_dir`) so repeated epochs and test runs
//! do not download again. Training and inference use the same loader.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::config::DataConfig;

/// Largest image body accepted from a server.
const MAX_DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(String),
}

#[derive(Clone)]
pub struct ImageSource {
    base_path: Option<PathBuf>,
    base_url: Option<String>,
    cache_dir: Option<PathBuf>,
    retries: u32,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("base_path", &self.base_path)
            .field("base_url", &self.base_url)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

fn is_url(key: &str) -> bool {
    key.starts_with("http://") || key.starts_with("https://")
}

impl ImageSource {
    pub fn from_config(data: &DataConfig) -> Self {
        let base_url = data.base_image_url.clone().or_else(|| {
            std::env::var("S3_CLOUDFRONT_DOMAIN")
                .ok()
                .filter(|d| !d.trim().is_empty())
                .map(|d| format!("https://{}", d.trim().trim_end_matches('/')))
        });
        let timeout = Duration::from_secs_f64(data.download_timeout_secs);
        Self {
            base_path: data.base_image_path.clone(),
            base_url,
            cache_dir: data.image_cache_dir.clone(),
            retries: data.download_retries,
            agent: ureq::AgentBuilder::new().timeout_connect(timeout).timeout(timeout).build(),
        }
    }

    /// Local files only, relative keys under `base`.
    pub fn local(base: Option<PathBuf>) -> Self {
        Self::from_config(&DataConfig { base_image_path: base, base_image_url: None, ..DataConfig::default() })
    }

    pub fn set_base_path(&mut self, base: Option<PathBuf>) {
        if base.is_some() {
            self.base_path = base;
        }
    }

    pub fn base_path(&self) -> Option<&Path> {
        self.base_path.as_deref()
    }

    pub fn locate(&self, key: &str) -> Location {
        if is_url(key) {
            return Location::Remote(key.to_string());
        }
        let path = Path::new(key);
        if path.is_absolute() {
            return Location::Local(path.to_path_buf());
        }
        if let Some(base) = &self.base_path {
            let under_base = base.join(path);
            // A path that exists as given (say, typed on the command line) is used as it is.
            return Location::Local(if under_base.exists() || !path.exists() {
                under_base
            } else {
                path.to_path_buf()
            });
        }
        if let Some(url) = &self.base_url {
            return Location::Remote(format!("{}/{}", url.trim_end_matches('/'), key.trim_start_matches('/')));
        }
        Location::Local(path.to_path_buf())
    }

    /// The raw bytes of an image.
    pub fn fetch(&self, key: &str) -> Result<Vec<u8>> {
        match self.locate(key) {
            Location::Local(path) => {
                std::fs::read(&path).with_context(|| format!("cannot open image {}", path.display()))
            }
            Location::Remote(url) => self.fetch_remote(&url),
        }
    }

    fn cache_path(&self, url: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(&name[..2]).join(name))
    }

    fn fetch_remote(&self, url: &str) -> Result<Vec<u8>> {
        let cached = self.cache_path(url);
        if let Some(path) = &cached {
            if let Ok(bytes) = std::fs::read(path) {
                return Ok(bytes);
            }
        }
        let mut last_error = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * (1 << (attempt - 1).min(4))));
            }
            match self.download(url) {
                Ok(bytes) => {
                    if let Some(path) = &cached {
                        // A cache that cannot be written only costs a later download.
                        if let Err(e) = crate::fsutil::write_atomic(path, &bytes) {
                            tracing::warn!("cannot cache {url}: {e:#}");
                        }
                    }
                    return Ok(bytes);
                }
                Err(Download::Permanent(e)) => return Err(e),
                Err(Download::Transient(e)) => last_error = Some(e),
            }
        }
        let error = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
        Err(error.context(format!("{url}: failed after {} attempt(s)", self.retries + 1)))
    }

    fn download(&self, url: &str) -> std::result::Result<Vec<u8>, Download> {
        match self.agent.get(url).call() {
            Ok(response) => {
                let mut bytes = Vec::new();
                response
                    .into_reader()
                    .take(MAX_DOWNLOAD_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Download::Transient(anyhow!("{url}: reading the body failed: {e}")))?;
                if bytes.len() as u64 > MAX_DOWNLOAD_BYTES {
                    return Err(Download::Permanent(anyhow!("{url}: body larger than {MAX_DOWNLOAD_BYTES} bytes")));
                }
                Ok(bytes)
            }
            // 4xx other than 408/429 will not change on a retry.
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) && code != 408 && code != 429 => {
                Err(Download::Permanent(anyhow!("{url}: HTTP {code}")))
            }
            Err(ureq::Error::Status(code, _)) => Err(Download::Transient(anyhow!("{url}: HTTP {code}"))),
            Err(e) => Err(Download::Transient(anyhow!("{url}: {e}"))),
        }
    }
}

enum Download {
    Permanent(anyhow::Error),
    Transient(anyhow::Error),
}

/// Fails early on a key that is empty.
pub fn check_key(key: &str) -> Result<()> {
    if key.trim().is_empty() {
        bail!("empty image path");
    }
    Ok(())
}
