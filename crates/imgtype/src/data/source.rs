//! Where image bytes come from. A key is resolved, as in the Python system, against
//! `data.base_image_path` (a local folder), else `data.base_image_url`, else
//! `https://$S3_CLOUDFRONT_DOMAIN/<key>`; absolute `http(s)://` URLs and absolute paths
//! are used as they are. `data.is_remote` true sends relative keys to the CDN even with a
//! folder set, false keeps them local. Remote keys are fetched by the `remote` module (feature `remote`).
//! Training and inference use the same loader.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::decode::DecodeLimits;
use crate::config::DataConfig;

#[cfg(feature = "remote")]
use super::remote::RemoteFetcher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(String),
}

/// Which locations image keys may reach. The binaries trust their operator's CSVs
/// ([`SourcePolicy::trusted`]); the backend API, whose keys come from its users' requests,
/// starts from [`SourcePolicy::restricted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Relative keys must stay inside the image folder (no `..`, no symlink out of it).
    pub confine_relative_keys: bool,
    /// Absolute file paths may be read.
    pub allow_absolute_paths: bool,
    /// The hosts (`host` or `host:port`) absolute URLs and redirects may reach; `None`: any.
    /// The configured CDN's host is always allowed.
    pub allowed_hosts: Option<Vec<String>>,
    /// Hosts that resolve to loopback, private, link-local or other non-public addresses
    /// may be fetched.
    pub allow_private_addresses: bool,
}

impl SourcePolicy {
    /// Everything, as the command line: the operator's own files and URLs.
    pub fn trusted() -> Self {
        Self {
            confine_relative_keys: false,
            allow_absolute_paths: true,
            allowed_hosts: None,
            allow_private_addresses: true,
        }
    }

    /// Relative keys inside the image folder or under the CDN; no absolute paths; absolute
    /// URLs only on the CDN's host; no non-public addresses.
    pub fn restricted() -> Self {
        Self {
            confine_relative_keys: true,
            allow_absolute_paths: false,
            allowed_hosts: Some(Vec::new()),
            allow_private_addresses: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageSource {
    base_path: Option<PathBuf>,
    base_url: Option<String>,
    /// `data.is_remote`: Some(true) relative keys only from the CDN, Some(false) only local.
    is_remote: Option<bool>,
    policy: SourcePolicy,
    remote: RemoteFetcher,
    limits: DecodeLimits,
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
        Self {
            base_path: data.base_image_path.clone(),
            base_url,
            is_remote: data.is_remote,
            policy: SourcePolicy::trusted(),
            remote: RemoteFetcher::new(data, None),
            limits: DecodeLimits::from_config(data),
        }
    }

    /// What decoding the fetched bytes may do (`data.max_image_pixels`, `data.allow_truncated_images`).
    pub fn decode_limits(&self) -> DecodeLimits {
        self.limits
    }
    /// Local files only, relative keys under `base`.
    pub fn local(base: Option<PathBuf>) -> Self {
        Self::from_config(&DataConfig { base_image_path: base, base_image_url: None, ..DataConfig::default() })
    }

    /// Applies `policy` to every later fetch.
    pub fn set_policy(&mut self, policy: SourcePolicy, data: &DataConfig) {
        let hosts = policy.allowed_hosts.as_ref().map(|hosts| {
            let mut hosts = hosts.clone();
            hosts.extend(self.base_url.as_deref().and_then(authority_of));
            hosts
        });
        let remote_policy =
            RemotePolicy { allowed_hosts: hosts, allow_private_addresses: policy.allow_private_addresses };
        self.remote = RemoteFetcher::new(data, Some(remote_policy));
        self.policy = policy;
    }

    pub fn policy(&self) -> &SourcePolicy {
        &self.policy
    }

    /// A folder given on the command line: relative keys are read from it, whatever
    /// `data.is_remote` says.
    pub fn set_base_path(&mut self, base: Option<PathBuf>) {
        if base.is_some() {
            self.base_path = base;
            self.is_remote = Some(false);
        }
    }

    /// Fails when relative keys are to come from the CDN but none is configured.
    pub fn check_configured(&self) -> Result<()> {
        if self.is_remote == Some(true) && self.base_url.is_none() {
            bail!(
                "data.is_remote is true but neither data.base_image_url nor the S3_CLOUDFRONT_DOMAIN \
                 environment variable is set: set one of them, or set data.is_remote to false and \
                 data.base_image_path to the local image folder"
            );
        }
        Ok(())
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
        let base_path = self.base_path.as_ref().filter(|_| self.is_remote != Some(true));
        let base_url = self.base_url.as_ref().filter(|_| self.is_remote != Some(false));
        if let Some(base) = base_path {
            let under_base = base.join(path);
            // A path that exists as given (say, typed on the command line) is used as it is.
            return Location::Local(if under_base.exists() || !path.exists() {
                under_base
            } else {
                path.to_path_buf()
            });
        }
        if let Some(url) = base_url {
            return Location::Remote(format!("{}/{}", url.trim_end_matches('/'), key.trim_start_matches('/')));
        }
        Location::Local(path.to_path_buf())
    }

    /// The raw bytes of an image.
    pub fn fetch(&self, key: &str) -> Result<Vec<u8>> {
        match self.locate(key) {
            Location::Local(path) => {
                if self.is_remote == Some(true) && path.is_relative() {
                    self.check_configured()?;
                }
                self.check_local(key, &path)?;
                std::fs::read(&path).with_context(|| format!("cannot open image {}", path.display()))
            }
            Location::Remote(url) => self.remote.fetch(&url),
        }
    }

    /// The source policy's rules for local files.
    fn check_local(&self, key: &str, path: &Path) -> Result<()> {
        if Path::new(key).is_absolute() {
            if !self.policy.allow_absolute_paths {
                bail!("{key}: absolute paths are not allowed here");
            }
            return Ok(());
        }
        if !self.policy.confine_relative_keys {
            return Ok(());
        }
        if Path::new(key).components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            bail!("{key}: `..` is not allowed in an image path");
        }
        let base = self.base_path.clone().unwrap_or_else(|| PathBuf::from("."));
        let (Ok(real_base), Ok(real_path)) = (base.canonicalize(), path.canonicalize()) else {
            return Ok(()); // a missing file fails as missing when it is read
        };
        if !real_path.starts_with(&real_base) {
            bail!("{key}: leads out of the image folder (a symbolic link?)");
        }
        Ok(())
    }
}

/// `host[:port]` of a URL.
pub fn authority_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// What remote fetches may reach (see [`SourcePolicy`]).
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    pub allowed_hosts: Option<Vec<String>>,
    pub allow_private_addresses: bool,
}

/// Without the `remote` feature a remote key is an error that says so.
#[cfg(not(feature = "remote"))]
#[derive(Debug, Clone)]
struct RemoteFetcher;

#[cfg(not(feature = "remote"))]
impl RemoteFetcher {
    fn new(_: &DataConfig, _: Option<RemotePolicy>) -> Self {
        Self
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        bail!("{url}: remote images need imgtype's `remote` feature")
    }
}

/// Fails early on a key that is empty.
pub fn check_key(key: &str) -> Result<()> {
    if key.trim().is_empty() {
        bail!("empty image path");
    }
    Ok(())
}
