//! Remote images: HTTP(S) fetches with a timeout (`data.download_timeout_secs`), retries
//! for timeouts and 5xx answers (`data.download_retries`; a 404 is not retried), and an
//! optional on-disk cache keyed by URL (`data.image_cache_dir`) so repeated epochs and
//! test runs do not download again. Under a source policy (the backend API's), URLs must be
//! on allowed hosts, redirects are followed by hand and only within them, and hosts that
//! resolve to non-public addresses are refused at resolution time (no DNS-rebinding gap).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use super::source::{authority_of, RemotePolicy};
use crate::config::DataConfig;

/// Redirects followed under a source policy.
const MAX_REDIRECTS: usize = 5;

/// Largest image body accepted from a server.
const MAX_DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;

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
    fn check_host(&self, url: &str) -> std::result::Result<(), Download> {
        let Some(allowed) = self.policy.as_ref().and_then(|p| p.allowed_hosts.as_ref()) else { return Ok(()) };
        let authority = authority_of(url).unwrap_or_default();
        let host_only = authority.rsplit_once(':').map_or(authority.as_str(), |(host, _)| host);
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(&authority) || a.eq_ignore_ascii_case(host_only)) {
            return Ok(());
        }
        let listed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        Err(Download::Permanent(anyhow!("{url}: host {authority} is not allowed here (allowed: {listed})")))
    }

    /// The bytes at `url`, from the cache when it has them.
    pub fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        if let Err(Download::Permanent(e) | Download::Transient(e)) = self.check_host(url) {
            return Err(e);
        }
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
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.agent.get(&current).call();
            if let Ok(r) = &response {
                if self.policy.is_some() && (300..400).contains(&r.status()) {
                    let Some(location) = r.header("Location") else {
                        return Err(Download::Permanent(anyhow!("{current}: HTTP {} without a Location", r.status())));
                    };
                    let next = r
                        .get_url()
                        .parse::<url::Url>()
                        .and_then(|base| base.join(location))
                        .map_err(|e| Download::Permanent(anyhow!("{current}: bad redirect to {location}: {e}")))?;
                    self.check_host(next.as_str()).map_err(|e| match e {
                        Download::Permanent(e) | Download::Transient(e) => {
                            Download::Permanent(e.context(format!("{url} redirects to {next}")))
                        }
                    })?;
                    current = next.to_string();
                    continue;
                }
            }
            return self.read_response(&current, response);
        }
        Err(Download::Permanent(anyhow!("{url}: more than {MAX_REDIRECTS} redirects")))
    }

    fn read_response(
        &self,
        url: &str,
        response: std::result::Result<ureq::Response, ureq::Error>,
    ) -> std::result::Result<Vec<u8>, Download> {
        match response {
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

/// A resolver that keeps only public addresses: loopback, private, link-local, shared,
/// unspecified and other special ranges (cloud metadata at 169.254.169.254, say) are refused.
fn resolve_public_only(netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let addresses: Vec<std::net::SocketAddr> = netloc.to_socket_addrs()?.collect();
    let public: Vec<std::net::SocketAddr> = addresses.iter().copied().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{netloc} resolves only to loopback, private or link-local addresses, which are not allowed here"),
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
