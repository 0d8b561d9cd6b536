//! Remote images: HTTP(S) fetches with a timeout (`data.download_timeout_secs`), retries
//! for timeouts and 5xx answers (`data.download_retries`; a 404 is not retried), and an
//! optional on-disk cache keyed by URL (`data.image_cache_dir`) so repeated epochs and
//! test runs do not download again. Under a source policy (the backend API's), URLs must be
//! on allowed hosts, redirects are followed by hand and only within them, and hosts that
//! resolve to non-public addresses are refused at resolution time (no DNS-rebinding gap).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};
use url::Url;

use super::open::image_cap;
use super::policy::RemotePolicy;
use imgtype_base::config::DataConfig;
use imgtype_base::fsutil::read_at_most;
use imgtype_base::keys::{authority, parse_url, shown};

/// Redirects followed under a source policy.
const MAX_REDIRECTS: usize = 5;

#[derive(Clone)]
pub(super) struct RemoteFetcher {
    cache_dir: Option<PathBuf>,
    retries: u32,
    agent: ureq::Agent,
    policy: Option<RemotePolicy>,
}

impl std::fmt::Debug for RemoteFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFetcher").field("cache_dir", &self.cache_dir).field("retries", &self.retries).finish()
    }
}

impl RemoteFetcher {
    pub fn new(data: &DataConfig, policy: Option<RemotePolicy>) -> Self {
        let timeout = Duration::from_secs_f64(data.download_timeout_secs);
        let mut builder = ureq::AgentBuilder::new().timeout_connect(timeout).timeout(timeout);
        if let Some(policy) = &policy {
            builder = builder.redirects(0);
            if !policy.allow_private_addresses {
                builder = builder.resolver(resolve_public_only);
            }
        }
        Self { cache_dir: data.image_cache_dir.clone(), retries: data.download_retries, agent: builder.build(), policy }
    }

    /// Refuses `url` when the policy does not allow its host.
    fn check_host(&self, url: &Url) -> std::result::Result<(), Download> {
        let Some(allowed) = self.policy.as_ref().and_then(|p| p.allowed_hosts.as_ref()) else { return Ok(()) };
        if allowed.iter().any(|a| a.matches(url)) {
            return Ok(());
        }
        let listed = match allowed.is_empty() {
            true => "none".to_string(),
            false => allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
        };
        Err(Download::Permanent(anyhow!(
            "{}: host {} is not allowed here (allowed: {listed})",
            shown(url.as_str()),
            shown(&authority(url))
        )))
    }

    /// The bytes at `url` (at most `max_bytes`), from the cache when it has them.
    pub fn fetch(&self, url: &Url, max_bytes: u64) -> Result<Vec<u8>> {
        if let Err(Download::Permanent(e) | Download::Transient(e)) = self.check_host(url) {
            return Err(e);
        }
        let cached = self.cache_path(url);
        if let Some(path) = &cached {
            let label = shown(url.as_str());
            if let Ok(bytes) = imgtype_base::fsutil::open_regular_file(path, &label, image_cap(max_bytes))
                .and_then(|(f, _)| read_at_most(f, &label, image_cap(max_bytes)))
            {
                return Ok(bytes);
            }
        }
        let mut last_error = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * (1 << (attempt - 1).min(4))));
            }
            match self.download(url, max_bytes) {
                Ok(bytes) => {
                    if let Some(path) = &cached {
                        // A cache that cannot be written only costs a later download.
                        if let Err(e) = imgtype_base::fsutil::write_atomic(path, &bytes) {
                            tracing::warn!("cannot cache {}: {e:#}", shown(url.as_str()));
                        }
                    }
                    return Ok(bytes);
                }
                Err(Download::Permanent(e)) => return Err(e),
                Err(Download::Transient(e)) => last_error = Some(e),
            }
        }
        let error = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
        Err(error.context(format!("{}: failed after {} attempt(s)", shown(url.as_str()), self.retries + 1)))
    }

    fn cache_path(&self, url: &Url) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let digest = Sha256::digest(url.as_str().as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(&name[..2]).join(name))
    }

    /// One download, following redirects by hand under a policy: each `Location` is parsed
    /// by the same rules as a key and checked before it is requested.
    fn download(&self, url: &Url, max_bytes: u64) -> std::result::Result<Vec<u8>, Download> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.agent.request_url("GET", &current).call();
            if let Ok(r) = &response {
                if self.policy.is_some() && (300..400).contains(&r.status()) {
                    let shown_current = shown(current.as_str()).into_owned();
                    let Some(location) = r.header("Location") else {
                        return Err(Download::Permanent(anyhow!(
                            "{shown_current}: HTTP {} without a Location",
                            r.status()
                        )));
                    };
                    let next = current
                        .join(location)
                        .map_err(anyhow::Error::from)
                        .and_then(|next| parse_url(next.as_str()))
                        .map_err(|e| {
                            Download::Permanent(anyhow!("{shown_current}: bad redirect to {}: {e:#}", shown(location)))
                        })?;
                    self.check_host(&next).map_err(|e| match e {
                        Download::Permanent(e) | Download::Transient(e) => Download::Permanent(e.context(format!(
                            "{} redirects to {}",
                            shown(url.as_str()),
                            shown(next.as_str())
                        ))),
                    })?;
                    current = next;
                    continue;
                }
            }
            return self.read_response(current.as_str(), response, max_bytes);
        }
        Err(Download::Permanent(anyhow!("{}: more than {MAX_REDIRECTS} redirects", shown(url.as_str()))))
    }

    fn read_response(
        &self,
        url: &str,
        response: std::result::Result<ureq::Response, ureq::Error>,
        max_bytes: u64,
    ) -> std::result::Result<Vec<u8>, Download> {
        let url = shown(url);
        match response {
            Ok(response) => {
                let declared = response.header("Content-Length").and_then(|n| n.trim().parse::<u64>().ok());
                if declared.is_some_and(|n| n > max_bytes) {
                    return Err(Download::Permanent(anyhow!(
                        "{url}: the server sends {} bytes, more than data.max_image_bytes ({max_bytes})",
                        declared.unwrap_or_default()
                    )));
                }
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(response.into_reader(), max_bytes + 1), &mut bytes)
                    .map_err(|e| Download::Transient(anyhow!("{url}: reading the body failed: {e}")))?;
                if bytes.len() as u64 > max_bytes {
                    return Err(Download::Permanent(anyhow!(
                        "{url}: body larger than data.max_image_bytes ({max_bytes} bytes)"
                    )));
                }
                Ok(bytes)
            }
            // 4xx other than 408/429 will not change on a retry.
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) && code != 408 && code != 429 => {
                Err(Download::Permanent(anyhow!("{url}: HTTP {code}")))
            }
            Err(ureq::Error::Status(code, _)) => Err(Download::Transient(anyhow!("{url}: HTTP {code}"))),
            // An address the policy refuses will be refused again: no retry.
            Err(e) if refused_address(&e).is_some() => {
                Err(Download::Permanent(anyhow!("{url}: {}", refused_address(&e).unwrap_or_default())))
            }
            Err(e) => Err(Download::Transient(anyhow!("{url}: {e}"))),
        }
    }
}

/// The resolver's refusal of a non-public address, when that is why a request failed.
fn refused_address(error: &ureq::Error) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        let refusal =
            inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<RefusedAddress>());
        if let Some(refusal) = refusal {
            return Some(refusal.0.clone());
        }
        source = inner.source();
    }
    None
}

/// Why the resolver gave no address: every address was one the policy refuses.
#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

enum Download {
    Permanent(anyhow::Error),
    Transient(anyhow::Error),
}

/// A resolver that keeps only public addresses: loopback, private, link-local, shared,
/// unspecified and other special ranges (cloud metadata at 169.254.169.254, say) are refused.
fn resolve_public_only(netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let addresses: Vec<std::net::SocketAddr> = netloc.to_socket_addrs()?.collect();
    let public: Vec<std::net::SocketAddr> = addresses.iter().copied().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            RefusedAddress(format!(
                "{netloc} resolves only to loopback, private or link-local addresses, which are not allowed here"
            )),
        ));
    }
    Ok(public)
}

fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 224)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.is_multicast())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!super::is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "151.101.1.1", "2606:4700::1111"] {
            assert!(super::is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
