//! The backend API's source policy, rule by rule, with real files and real HTTP servers on
//! 127.0.0.1 standing in for the CDN and for a host a request must not reach: relative keys
//! stay in the image folder, absolute paths only when allowed, URLs only on allowed hosts,
//! redirects only within them, and non-public addresses only when allowed.
#![cfg(feature = "remote")]

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use imgtype::data::SourcePolicy;
use imgtype::infer::{ApiPrediction, ImageClassificationApi};
use imgtype::{Config, ImageTypeClassifier};
use tch::Device;

fn png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 40, 40]))
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

/// Serves /cdn.png, and /redirect?to=URL answering 302 to URL.
fn server() -> String {
    counted_server().0
}

/// [`server`], with the number of requests it has received.
fn counted_server() -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            counter.fetch_add(1, Ordering::SeqCst);
            let url = request.url().to_string();
            let response = if url == "/cdn.png" {
                tiny_http::Response::from_data(png())
            } else if let Some(target) = url.strip_prefix("/redirect?to=") {
                let location = tiny_http::Header::from_bytes(&b"Location"[..], target.as_bytes()).unwrap();
                tiny_http::Response::from_data(Vec::new()).with_status_code(302).with_header(location)
            } else {
                tiny_http::Response::from_data(b"no".to_vec()).with_status_code(404)
            };
            let _ = request.respond(response);
        }
    });
    (format!("http://127.0.0.1:{port}"), hits)
}

fn api(dir: &Path, config: impl FnOnce(&mut Config)) -> ImageClassificationApi {
    let mut c = Config::default();
    c.augmentation.image_size = 32;
    config(&mut c);
    let path = dir.join(format!("model_{}.safetensors", rand_suffix()));
    ImageTypeClassifier::new(&c, Device::Cpu).save(&path).unwrap();
    ImageClassificationApi::with_device(&path, Device::Cpu).unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn one(api: &ImageClassificationApi, key: &str) -> ApiPrediction {
    api.predict(&[key]).remove(0)
}

fn refused(result: &ApiPrediction, reason: &str) {
    assert_eq!(result.predicted_class, "ERROR", "{result:?}");
    let error = result.error.as_deref().unwrap_or_default();
    assert!(error.contains(reason), "expected `{reason}` in {error:?}");
}

fn predicted(result: &ApiPrediction) {
    assert_ne!(result.predicted_class, "ERROR", "{result:?}");
}

#[test]
fn local_keys_stay_in_the_image_folder_and_absolute_paths_need_permission() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("product")).unwrap();
    std::fs::write(images.join("product/ok.png"), png()).unwrap();
    std::fs::write(dir.path().join("secret.png"), png()).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.png"), images.join("link.png")).unwrap();
    let images_for_config = images.clone();
    let api = api(dir.path(), move |c| c.data.base_image_path = Some(images_for_config));

    predicted(&one(&api, "product/ok.png"));
    refused(&one(&api, "../secret.png"), "`..` is not allowed");
    refused(&one(&api, "product/../../secret.png"), "`..` is not allowed");
    refused(&one(&api, "link.png"), "leads out of the image folder");
    let absolute = dir.path().join("secret.png").display().to_string();
    refused(&one(&api, &absolute), "absolute paths are not allowed");

    let api =
        api.with_source_policy(SourcePolicy { allow_absolute_paths: true, ..SourcePolicy::restricted() }).unwrap();
    predicted(&one(&api, &absolute));
    refused(&one(&api, "link.png"), "leads out of the image folder");
    // No read without a bound: a device, and a 20 GB (sparse) file in the folder.
    refused(&one(&api, "/dev/zero"), "not a regular file");
    std::fs::File::create(images.join("huge.jpg")).unwrap().set_len(20 << 30).unwrap();
    refused(&one(&api, "huge.jpg"), "more than data.max_image_bytes");
    let trusted = api.with_source_policy(SourcePolicy::trusted()).unwrap();
    predicted(&one(&trusted, "link.png"));
}

#[test]
fn urls_only_on_allowed_public_hosts_and_redirects_only_within_them() {
    let dir = tempfile::tempdir().unwrap();
    let cdn = server();
    let other = server();
    let cdn_for_config = cdn.clone();
    let api = api(dir.path(), move |c| c.data.base_image_url = Some(cdn_for_config));

    // By default even the CDN is refused here: the stand-in listens on a loopback address.
    refused(&one(&api, "cdn.png"), "loopback");
    // Allowing non-public addresses (as this test's stand-in CDN needs), the CDN serves.
    let api =
        api.with_source_policy(SourcePolicy { allow_private_addresses: true, ..SourcePolicy::restricted() }).unwrap();
    predicted(&one(&api, "cdn.png"));
    predicted(&one(&api, &format!("{cdn}/cdn.png")));
    let other_host = other.trim_start_matches("http://");
    refused(&one(&api, &format!("{other}/cdn.png")), &format!("host {other_host} is not allowed"));
    predicted(&one(&api, &format!("{cdn}/redirect?to={cdn}/cdn.png")));
    refused(&one(&api, &format!("{cdn}/redirect?to={other}/cdn.png")), "is not allowed");
    refused(&one(&api, "file:///etc/passwd"), "");

    // A host on the allowed list that resolves to a loopback address is still refused
    // unless non-public addresses are allowed.
    let listed = api
        .with_source_policy(SourcePolicy {
            allowed_hosts: Some(vec![other_host.to_string()]),
            ..SourcePolicy::restricted()
        })
        .unwrap();
    refused(&one(&listed, &format!("{other}/cdn.png")), "loopback");
}

/// Two counting servers, A and B, and an API whose policy allows A only (loopback allowed,
/// as the stand-ins listen there).
fn two_hosts_only_the_first_allowed(
    dir: &Path,
) -> (ImageClassificationApi, (String, Arc<AtomicUsize>), (String, Arc<AtomicUsize>)) {
    let (allowed, other) = (counted_server(), counted_server());
    let api = api(dir, |_| {})
        .with_source_policy(SourcePolicy {
            allowed_hosts: Some(vec![allowed.0.trim_start_matches("http://").to_string()]),
            allow_private_addresses: true,
            ..SourcePolicy::restricted()
        })
        .unwrap();
    (api, allowed, other)
}

/// The allow-list bypass: a policy that read the host from the text after the last `@`
/// allowed host A while the HTTP client, reading `\` as `/`, connected to B. Parsed once,
/// such URLs are refused, and B never gets a request.
#[test]
fn urls_the_policy_and_the_client_could_read_differently_never_reach_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let (api, (allowed, allowed_hits), (other, other_hits)) = two_hosts_only_the_first_allowed(dir.path());
    let a = allowed.trim_start_matches("http://").to_string();
    let b = other.trim_start_matches("http://").to_string();
    let port_b = b.rsplit_once(':').unwrap().1.to_string();
    predicted(&one(&api, &format!("{allowed}/cdn.png")));
    predicted(&one(&api, &format!("HTTP://{a}/cdn.png")));
    for attack in [
        format!("http://{b}\\@{a}/cdn.png"),
        format!("http://localhost:{port_b}\\@{a}/cdn.png"),
        format!("http://{b}\\\\@{a}/cdn.png"),
        format!("http://{b}/@{a}/cdn.png"),
        format!("http://{a}@{b}/cdn.png"),
        format!("http:\\\\{b}/cdn.png"),
        format!("http://{b}\t/cdn.png"),
        format!("HtTp://{b}/cdn.png"),
        format!("http://{b}#@{a}/cdn.png"),
        format!("http://{b}?@{a}/cdn.png"),
        format!("http://0x7f.0.0.1:{port_b}/cdn.png"),
        format!("http://[::ffff:127.0.0.1]:{port_b}/cdn.png"),
    ] {
        let result = one(&api, &attack);
        assert_eq!(result.predicted_class, "ERROR", "{attack}: {result:?}");
    }
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "a request reached the host that is not allowed");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 2);
}

/// Percent-encoded dots and slashes in a relative key would leave the CDN prefix once the
/// URL is normalised: refused before any request.
#[test]
fn relative_keys_cannot_leave_the_cdn_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, hits) = counted_server();
    let base = format!("{cdn}/cdn/");
    let api = api(dir.path(), move |c| c.data.base_image_url = Some(base))
        .with_source_policy(SourcePolicy { allow_private_addresses: true, ..SourcePolicy::restricted() })
        .unwrap();
    for key in ["%2e%2e/%2e%2e/etc/passwd", "%2E%2E/cdn.png", "..%2fcdn.png", "../cdn.png", "a/%2e./b"] {
        refused(&one(&api, key), "");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// A CDN on an address the policy refuses fails at once, without retries.
#[test]
fn refused_addresses_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, hits) = counted_server();
    let api = api(dir.path(), move |c| {
        c.data.base_image_url = Some(cdn);
        c.data.download_retries = 3;
    });
    let started = std::time::Instant::now();
    let result = one(&api, "cdn.png");
    refused(&result, "not allowed here");
    let error = result.error.unwrap();
    assert!(!error.contains("attempt"), "retried: {error}");
    // Three retries would wait 0.2 + 0.4 + 0.8 s.
    assert!(started.elapsed() < std::time::Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// Errors show the key as given, never the server's folders, and long keys are cut.
#[test]
fn errors_name_the_key_not_the_server_folder() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let folder = images.clone();
    let api = api(dir.path(), move |c| c.data.base_image_path = Some(folder));
    let missing = one(&api, "missing.jpg");
    let error = missing.error.unwrap();
    assert!(error.contains("missing.jpg") && !error.contains(&images.display().to_string()), "{error}");
    let long_key = "k".repeat(100_000);
    let error = one(&api, &long_key).error.unwrap();
    assert!(error.len() < 1000, "{} bytes: {}", error.len(), &error[..300]);
    assert!(error.contains("100000 bytes"), "{error}");
    let error = one(&api, &format!("http://{long_key}.test/x.jpg")).error.unwrap();
    assert!(error.len() < 1000, "{} bytes", error.len());
}

/// A link inside the image folder flipped between an image inside and a file outside while
/// predictions run: the file read is checked after it is opened, so the outside file's
/// pixels are never predicted (its colour would give another class than the inside one's).
#[test]
fn a_link_swapped_during_predictions_never_reads_outside() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("inside.png"), png()).unwrap();
    // Outside: not an image at all, so reading it would give a decode error, not a refusal.
    std::fs::write(dir.path().join("outside.png"), b"secret bytes outside the folder").unwrap();
    let folder = images.clone();
    let api = api(dir.path(), move |c| c.data.base_image_path = Some(folder));
    let link = images.join("link.png");
    std::os::unix::fs::symlink("inside.png", &link).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, images, outside) = (stop.clone(), images.clone(), dir.path().join("outside.png"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let target = if n % 2 == 0 { outside.clone() } else { images.join("inside.png") };
                let temp = images.join(".swap");
                let _ = std::fs::remove_file(&temp);
                std::os::unix::fs::symlink(&target, &temp).unwrap();
                std::fs::rename(&temp, images.join("link.png")).unwrap();
                n += 1;
            }
        })
    };
    let (mut read_inside, mut refused_outside) = (0, 0);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        for result in api.predict(&["link.png"; 16]) {
            match result.error.as_deref() {
                None => read_inside += 1,
                Some(e) if e.contains("leads out of the image folder") || e.contains("changed while") => {
                    refused_outside += 1
                }
                Some(e) if e.contains("No such file") => {}
                Some(e) => panic!("the outside file was read: {e}"),
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    flipper.join().unwrap();
    assert!(read_inside > 0 && refused_outside > 0, "inside {read_inside}, refused {refused_outside}");
}

/// Differential, against real servers: generated URLs that mix the allowed host A and the
/// other host B with separators, user info and encodings. B never gets a request, and every
/// prediction that succeeds was of a URL whose one parse names A.
#[test]
fn generated_urls_never_reach_a_host_that_is_not_allowed() {
    use proptest::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let (api, (allowed, _), (other, other_hits)) = two_hosts_only_the_first_allowed(dir.path());
    let a = allowed.trim_start_matches("http://").to_string();
    let b = other.trim_start_matches("http://").to_string();
    let piece = prop_oneof![
        Just(a.clone()),
        Just(b.clone()),
        Just(format!("localhost:{}", b.rsplit_once(':').unwrap().1)),
        Just("\\".to_string()),
        Just("@".to_string()),
        Just("/".to_string()),
        Just("#".to_string()),
        Just("?".to_string()),
        Just("%40".to_string()),
        Just("%2f".to_string()),
        Just(":".to_string()),
        Just("/cdn.png".to_string()),
    ];
    let scheme = prop_oneof![Just("http://"), Just("HTTP://"), Just("http:"), Just("http:\\\\")];
    let urls = (scheme, proptest::collection::vec(piece, 1..6)).prop_map(|(s, p)| format!("{s}{}", p.concat()));
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
    runner
        .run(&urls, |url| {
            let result = one(&api, &url);
            if result.error.is_none() {
                let parsed = imgtype::keys::Url::parse(&url).unwrap();
                let authority = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
                prop_assert_eq!(authority, a.clone(), "{} predicted", url);
            }
            prop_assert_eq!(other_hits.load(Ordering::SeqCst), 0, "{} reached the other host", url);
            Ok(())
        })
        .unwrap();
}
