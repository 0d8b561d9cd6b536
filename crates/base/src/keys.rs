//! Image keys (a CSV cell, an argument of the backend API) read once into what they name:
//! a URL, an absolute path or a relative key. URLs are parsed by the `url` crate (WHATWG
//! rules, the parser the HTTP client uses), and anything that parser and a human reader or
//! an older parser could read differently is refused outright: `\`, control characters and
//! spaces, user info (`user@host`). The source policy decides on the parsed URL, and the
//! HTTP client is handed that same parsed URL, so the two cannot disagree about the host.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{bail, Result};
pub use url::Url;

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Url(Url),
    AbsolutePath(PathBuf),
    /// A path relative to the image folder, or a key under the CDN.
    Relative(String),
}

/// Longest key shown in an error message; longer ones are cut (a 100 KB key is not echoed).
const SHOWN_KEY_CHARS: usize = 160;

/// `key` as it appears in messages: as given, cut after [`SHOWN_KEY_CHARS`] characters.
pub fn shown(key: &str) -> Cow<'_, str> {
    match key.char_indices().nth(SHOWN_KEY_CHARS) {
        None => Cow::Borrowed(key),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} bytes in all)", &key[..cut], key.len())),
    }
}

/// The scheme of a key that is written as a URL: letters, digits, `+-.` after a letter,
/// then `:` and a slash (`http:/x` and `HTTP://x` too), or any `http:` / `https:` prefix,
/// which WHATWG parsing turns into a URL whatever follows. `C:` and `img:1.jpg` are not URLs.
fn url_scheme(key: &str) -> Option<&str> {
    let (scheme, rest) = key.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !well_formed || scheme.len() < 2 {
        return None;
    }
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    (web || rest.starts_with(['/', '\\'])).then_some(scheme)
}

/// Reads a key. Empty keys, URLs of other schemes and URLs the policy could misread are errors.
pub fn parse_key(key: &str) -> Result<Key> {
    if key.trim().is_empty() {
        bail!("empty image path");
    }
    if url_scheme(key).is_some() {
        return parse_url(key).map(Key::Url);
    }
    let path = PathBuf::from(key);
    if path.is_absolute() {
        return Ok(Key::AbsolutePath(path));
    }
    Ok(Key::Relative(key.to_string()))
}

/// Characters a URL may not contain here: the WHATWG parser drops or rewrites them (tabs and
/// newlines vanish, `\` is `/`), so a check reading the text would see another URL. Spaces
/// are not among them: inside a path they are percent-encoded, in a host they fail the parse.
fn misreadable_char(c: char) -> bool {
    c == '\\' || c.is_control()
}

/// An absolute `http(s)` URL, parsed once.
pub fn parse_url(text: &str) -> Result<Url> {
    let scheme = url_scheme(text).unwrap_or_default();
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        bail!("{}: only http and https URLs are supported (scheme `{scheme}`)", shown(text));
    }
    if let Some(c) = text.chars().find(|&c| misreadable_char(c)) {
        bail!("{}: a URL may not contain {c:?}", shown(text));
    }
    let url = Url::parse(text).map_err(|e| anyhow::anyhow!("{}: not a valid URL ({e})", shown(text)))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{}: user info (`name@`) in an image URL is not allowed", shown(text));
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("{}: the URL has no host", shown(text));
    }
    Ok(url)
}

/// Fails on a relative key that could leave the folder or URL prefix it is read under:
/// `..` segments (also percent-encoded: `%2e%2e`), encoded `/` or `\`, and the characters
/// [`misreadable_char`] names.
pub fn check_relative(key: &str) -> Result<()> {
    let lower = key.to_ascii_lowercase();
    if let Some(code) = ["%2e", "%2f", "%5c"].into_iter().find(|code| lower.contains(code)) {
        bail!("{}: percent-encoded `{code}` is not allowed in a relative image key", shown(key));
    }
    if key.split(['/', '\\']).any(|segment| segment == "..") {
        bail!("{}: `..` is not allowed in an image path", shown(key));
    }
    Ok(())
}

/// The URL of relative key `key` under the CDN prefix `base`: the key's path appended, and
/// the result checked to stay on the base's scheme, host and port, under its path.
pub fn join_under(base: &Url, key: &str) -> Result<Url> {
    check_relative(key)?;
    if let Some(c) = key.chars().find(|&c| misreadable_char(c)) {
        bail!("{}: a key fetched from the CDN may not contain {c:?}", shown(key));
    }
    let prefix = base.as_str().split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    let joined = format!("{prefix}/{}", key.trim_start_matches('/'));
    let url = Url::parse(&joined).map_err(|e| anyhow::anyhow!("{}: not a valid key for the CDN ({e})", shown(key)))?;
    let base_dir = format!("{}/", base.path().trim_end_matches('/'));
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin || !url.path().starts_with(&base_dir) || !url.username().is_empty() {
        bail!("{}: leads outside the CDN prefix {base}", shown(key));
    }
    Ok(url)
}

/// A host the policy allows: a host name or address, with or without a port, in the form
/// the URL parser gives (lower case, IPv4 in dotted form, IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    port: Option<u16>,
    /// As written, for messages.
    given: String,
}

impl AllowedHost {
    /// Reads `host` or `host:port` (`[v6]:port`) as the URL parser would.
    pub fn parse(entry: &str) -> Result<Self> {
        let trimmed = entry.trim();
        if trimmed.is_empty() || trimmed.contains(['/', '?', '#', '@']) || trimmed.chars().any(misreadable_char) {
            bail!("allowed host `{entry}` is not a host or host:port");
        }
        let url = Url::parse(&format!("http://{trimmed}/"))
            .map_err(|e| anyhow::anyhow!("allowed host `{entry}` is not a host or host:port ({e})"))?;
        let host = url.host_str().unwrap_or_default().to_string();
        // The parser drops the default port 80; `host:80` must still mean only port 80.
        let port = url.port().or_else(|| trimmed.rsplit_once(':').filter(|(_, p)| p.trim() == "80").map(|_| 80));
        Ok(Self { host, port, given: trimmed.to_string() })
    }

    /// The allowed host of a URL's own authority (the CDN's).
    pub fn of_url(url: &Url) -> Self {
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default();
        let given = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Self { host, port, given }
    }

    pub fn matches(&self, url: &Url) -> bool {
        url.host_str() == Some(self.host.as_str()) && self.port.is_none_or(|p| url.port_or_known_default() == Some(p))
    }

    pub fn as_str(&self) -> &str {
        &self.given
    }
}

/// `host[:port]` of a parsed URL, as messages show it.
pub fn authority(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        match parse_key(text).unwrap() {
            Key::Url(url) => url,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn schemes_are_case_insensitive_and_other_schemes_are_refused() {
        assert_eq!(url("HTTP://Example.COM/a.jpg").as_str(), "http://example.com/a.jpg");
        assert_eq!(url("hTTpS://cdn.test/x").host_str(), Some("cdn.test"));
        assert_eq!(url("http:/example.com/a.jpg").host_str(), Some("example.com"));
        for key in ["ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://x/"] {
            let err = parse_key(key).unwrap_err().to_string();
            assert!(err.contains("only http and https"), "{key}: {err}");
        }
        assert_eq!(parse_key("img:1.jpg").unwrap(), Key::Relative("img:1.jpg".into()));
        assert_eq!(parse_key("C:photo.jpg").unwrap(), Key::Relative("C:photo.jpg".into()));
    }

    #[test]
    fn urls_a_reader_could_misread_are_refused() {
        for key in [
            "http://127.0.0.1:9\\@127.0.0.1:8/u.jpg",
            "http://localhost:9\\@127.0.0.1:8/u.jpg",
            "http://127.0.0.1:9\\\\@127.0.0.1:8/u.jpg",
            "http://a.test/\tb.jpg",
            "http://a.test/b\n.jpg",
            "http:\\\\a.test/b.jpg",
        ] {
            assert!(parse_key(key).is_err(), "{key:?} accepted");
        }
        assert_eq!(url("http://a.test/b c.jpg").path(), "/b%20c.jpg");
        for key in ["http://a.test b.test/x", "http://a.test @b.test/x"] {
            assert!(parse_key(key).is_err(), "{key:?} accepted");
        }
        let err = parse_key("http://user:pw@a.test/x.jpg").unwrap_err().to_string();
        assert!(err.contains("user info"), "{err}");
        assert!(parse_key("http://@a.test/x.jpg").is_err() || url("http://@a.test/x.jpg").username().is_empty());
    }

    #[test]
    fn relative_keys_stay_under_the_cdn_prefix() {
        let base = Url::parse("https://cdn.test/cdn/").unwrap();
        assert_eq!(join_under(&base, "a/b.jpg").unwrap().as_str(), "https://cdn.test/cdn/a/b.jpg");
        assert_eq!(join_under(&base, "/a.jpg").unwrap().as_str(), "https://cdn.test/cdn/a.jpg");
        for key in
            ["%2e%2e/%2e%2e/etc/passwd", "%2E%2E/x", ".%2e/x", "a%2fb", "a%5Cb", "../x.jpg", "a/../../x", "a\\..\\x"]
        {
            assert!(join_under(&base, key).is_err(), "{key} accepted");
        }
        assert_eq!(join_under(&base, "a b.jpg").unwrap().as_str(), "https://cdn.test/cdn/a%20b.jpg");
        let no_slash = Url::parse("https://cdn.test/cdn").unwrap();
        assert_eq!(join_under(&no_slash, "x.jpg").unwrap().as_str(), "https://cdn.test/cdn/x.jpg");
    }

    #[test]
    fn allowed_hosts_are_read_as_the_url_parser_reads_hosts() {
        let allowed = AllowedHost::parse("127.0.0.1:8080").unwrap();
        assert!(allowed.matches(&url("http://127.0.0.1:8080/x")));
        assert!(!allowed.matches(&url("http://127.0.0.1:8081/x")));
        // Other spellings of one address are one address.
        assert!(allowed.matches(&url("http://2130706433:8080/x")));
        assert!(allowed.matches(&url("http://0x7f.1:8080/x")));
        let any_port = AllowedHost::parse("Images.Example.com").unwrap();
        assert!(any_port.matches(&url("https://images.example.com/x")));
        assert!(any_port.matches(&url("http://images.example.com:81/x")));
        let port_80 = AllowedHost::parse("a.test:80").unwrap();
        assert!(port_80.matches(&url("http://a.test/x")) && !port_80.matches(&url("https://a.test/x")));
        assert!(AllowedHost::parse("[::1]:9").unwrap().matches(&url("http://[::1]:9/x")));
        for bad in ["", "a.test/x", "u@a.test", "a .test"] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_keys_are_cut_in_messages() {
        let key = "a".repeat(100_000);
        assert!(shown(&key).len() < 250);
        assert!(shown(&key).contains("100000 bytes"));
        assert_eq!(shown("short.jpg"), "short.jpg");
    }
}
