//! What image keys may reach: the source policy of the backend API (and the trust of the
//! command line), and the part of it that remote fetches apply.

use imgtype_base::keys::AllowedHost;

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

/// What remote fetches may reach (see [`SourcePolicy`]).
#[derive(Debug, Clone)]
// Without the `remote` feature no fetch reads it: remote keys are an error that says so.
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub struct RemotePolicy {
    pub allowed_hosts: Option<Vec<AllowedHost>>,
    pub allow_private_addresses: bool,
}
