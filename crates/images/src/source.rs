//! Where image bytes come from. A key is resolved, as in the Python system, against
//! `data.base_image_path` (a local folder), else `data.base_image_url`, else
//! `https://$S3_CLOUDFRONT_DOMAIN/<key>`; absolute `http(s)://` URLs and absolute paths
//! are used as they are. `data.is_remote` true sends relative keys to the CDN even with a
//! folder set, false keeps them local. Remote keys are fetched by the `remote` module (feature `remote`).
//! Training and inference use the same loader.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use url::Url;

use super::decode::DecodeLimits;
use super::policy::RemotePolicy;
pub use super::policy::SourcePolicy;
use imgtype_base::config::DataConfig;
use imgtype_base::keys::{join_under, parse_key, parse_url, shown, AllowedHost, Key};

#[cfg(feature = "remote")]
use super::remote::RemoteFetcher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// Parsed once: the policy's decision and the HTTP request are about this URL.
    Remote(Url),
}

#[derive(Debug, Clone)]
pub struct ImageSource {
    base_path: Option<PathBuf>,
    base_url: Option<Url>,
    /// `data.is_remote`: Some(true) relative keys only from the CDN, Some(false) only local.
    is_remote: Option<bool>,
    policy: SourcePolicy,
    remote: RemoteFetcher,
    limits: DecodeLimits,
    /// `data.max_image_bytes`: larger files and bodies are refused before they are read whole.
    max_bytes: u64,
}

/// The CDN prefix: `data.base_image_url`, else `https://$S3_CLOUDFRONT_DOMAIN`. The config's
/// URL was checked when the config was read; a domain in the environment that is not a
/// host is warned about and left unset.
fn cdn_base(data: &DataConfig) -> Option<Url> {
    if let Some(url) = &data.base_image_url {
        return parse_url(url).map_err(|e| tracing::warn!("data.base_image_url: {e:#}")).ok();
    }
    let domain = std::env::var("S3_CLOUDFRONT_DOMAIN").ok().filter(|d| !d.trim().is_empty())?;
    let url = format!("https://{}", domain.trim().trim_end_matches('/'));
    parse_url(&url).map_err(|e| tracing::warn!("S3_CLOUDFRONT_DOMAIN: {e:#}")).ok()
}

impl ImageSource {
    pub fn from_config(data: &DataConfig) -> Self {
        Self {
            base_path: data.base_image_path.clone(),
            base_url: cdn_base(data),
            is_remote: data.is_remote,
            policy: SourcePolicy::trusted(),
            remote: RemoteFetcher::new(data, None),
            limits: DecodeLimits::from_config(data),
            max_bytes: data.max_image_bytes,
        }
    }

    /// What decoding the fetched bytes may do (`data.max_image_pixels`, `data.allow_truncated_images`).
    pub fn decode_limits(&self) -> DecodeLimits {
        self.limits
    }

    /// `data.max_image_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Local files only, relative keys under `base`.
    pub fn local(base: Option<PathBuf>) -> Self {
        Self::from_config(&DataConfig { base_image_path: base, base_image_url: None, ..DataConfig::default() })
    }

    /// Applies `policy` to every later fetch. Fails on an allowed host that is not a host.
    pub fn set_policy(&mut self, policy: SourcePolicy, data: &DataConfig) -> Result<()> {
        let hosts = match &policy.allowed_hosts {
            None => None,
            Some(hosts) => {
                let mut parsed = hosts.iter().map(|h| AllowedHost::parse(h)).collect::<Result<Vec<_>>>()?;
                parsed.extend(self.base_url.as_ref().map(AllowedHost::of_url));
                Some(parsed)
            }
        };
        let remote_policy =
            RemotePolicy { allowed_hosts: hosts, allow_private_addresses: policy.allow_private_addresses };
        self.remote = RemoteFetcher::new(data, Some(remote_policy));
        self.policy = policy;
        Ok(())
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

    /// Where `key` leads, the key read once ([`parse_key`]). Fails on a key no policy could
    /// take (an empty key, a URL of another scheme or one that could be misread, a relative
    /// key that would leave the CDN prefix).
    pub fn locate(&self, key: &str) -> Result<Location> {
        let relative = match parse_key(key)? {
            Key::Url(url) => return Ok(Location::Remote(url)),
            Key::AbsolutePath(path) => return Ok(Location::Local(path)),
            Key::Relative(relative) => relative,
        };
        let path = Path::new(&relative);
        let base_path = self.base_path.as_ref().filter(|_| self.is_remote != Some(true));
        let base_url = self.base_url.as_ref().filter(|_| self.is_remote != Some(false));
        if let Some(base) = base_path {
            let under_base = base.join(path);
            // Under the command line's trust a path that exists as given (typed on the
            // command line, say) is used as it is; confined keys are always under the folder.
            let as_given = !self.policy.confine_relative_keys && !under_base.exists() && path.exists();
            return Ok(Location::Local(if as_given { path.to_path_buf() } else { under_base }));
        }
        if let Some(url) = base_url {
            return join_under(url, &relative).map(Location::Remote);
        }
        self.check_configured()?;
        Ok(Location::Local(path.to_path_buf()))
    }

    /// The raw bytes of an image, at most `data.max_image_bytes` of them.
    pub fn fetch(&self, key: &str) -> Result<Vec<u8>> {
        match self.locate(key)? {
            Location::Local(path) => self.read_local(key, &path),
            Location::Remote(url) => self.remote.fetch(&url, self.max_bytes),
        }
    }

    /// Whether an image can be used: the key is not empty, its bytes can be fetched, and
    /// they decode as far as [`super::decode::check_readable`] needs to tell. The one
    /// screening `divide` and training apply.
    pub fn check_readable(&self, key: &str) -> Result<()> {
        check_key(key)?;
        super::decode::check_readable(&self.fetch(key)?, key, self.limits)
    }

    /// The bytes of a local file named by a path (any bytes, on Unix not only UTF-8) rather
    /// than a key: a regular file, at most `data.max_image_bytes`.
    pub fn read_path(&self, path: &Path) -> Result<Vec<u8>> {
        super::open::read_regular_file(path, None, self.max_bytes, &path.to_string_lossy())
    }

    /// Reads a local file under the policy's rules. The file is opened first and what was
    /// opened is checked (see [`super::open::read_regular_file`]), so no swap of a link
    /// between a check and the open can lead outside the image folder. Under a restricted
    /// policy messages name the key, never the server's folders.
    fn read_local(&self, key: &str, path: &Path) -> Result<Vec<u8>> {
        let absolute = Path::new(key).is_absolute();
        if absolute && !self.policy.allow_absolute_paths {
            bail!("{}: absolute paths are not allowed here", shown(key));
        }
        let label =
            if self.policy.confine_relative_keys { shown(key).into_owned() } else { path.display().to_string() };
        let confine = self.policy.confine_relative_keys && !absolute;
        if confine && Path::new(key).components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            bail!("{}: `..` is not allowed in an image path", shown(key));
        }
        let folder = confine.then(|| self.base_path.clone().unwrap_or_else(|| PathBuf::from(".")));
        super::open::read_regular_file(path, folder.as_deref(), self.max_bytes, &label)
    }
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

    fn fetch(&self, url: &Url, _max_bytes: u64) -> Result<Vec<u8>> {
        bail!("{}: remote images need imgtype's `remote` feature", shown(url.as_str()))
    }
}

/// Fails early on a key that is empty.
pub fn check_key(key: &str) -> Result<()> {
    if key.trim().is_empty() {
        bail!("empty image path");
    }
    Ok(())
}
