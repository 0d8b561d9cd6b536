//! Remote images: HTTP(S) fetches with a timeout (`data.download_timeout_secs`), retries
//! for timeouts and 5xx answers (`data.download_retries`; a 404 is not retried), and an
//! optional on-disk cache keyed by URL (`data.image_cache_dir`) so repeated epochs and
//! test runs do not download again.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use crate::config::DataConfig;

/// Largest image body accepted from a server.
const MAX_DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub(super) struct RemoteFetcher {
    cache_dir: Option<PathBuf>,
    retries: u32,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFetcher").field("cache_dir", &self.cache_dir).field("retries", &self.retries).finish()
    }
}

impl RemoteFetcher {
    pub fn new(data: &DataConfig) -> Self {
        let timeout = Duration::from_secs_f64(data.download_timeout_secs);
        Self {
            cache_dir: data.image_cache_dir.clone(),
            retries: data.download_retries,
            agent: ureq::AgentBuilder::new().timeout_connect(timeout).timeout(timeout).build(),
        }
    }

    /// The bytes at `url`, from the cache when it has them.
    pub fn fetch(&self, url: &str) -> Result<Vec<u8>> {
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

    fn cache_path(&self, url: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(&name[..2]).join(name))
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
