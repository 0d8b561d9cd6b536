//! The backend API's source policy, rule by rule, with real files and real HTTP servers on
//! 127.0.0.1 standing in for the CDN and for a host a request must not reach: relative keys
//! stay in the image folder, absolute paths only when allowed, URLs only on allowed hosts,
//! redirects only within them, and non-public addresses only when allowed.
#![cfg(feature = "remote")]

use std::io::Cursor;
use std::path::Path;

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
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
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
    format!("http://127.0.0.1:{port}")
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

    let api = api.with_source_policy(SourcePolicy { allow_absolute_paths: true, ..SourcePolicy::restricted() });
    predicted(&one(&api, &absolute));
    refused(&one(&api, "link.png"), "leads out of the image folder");
    let trusted = api.with_source_policy(SourcePolicy::trusted());
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
    let api = api.with_source_policy(SourcePolicy { allow_private_addresses: true, ..SourcePolicy::restricted() });
    predicted(&one(&api, "cdn.png"));
    predicted(&one(&api, &format!("{cdn}/cdn.png")));
    let other_host = other.trim_start_matches("http://");
    refused(&one(&api, &format!("{other}/cdn.png")), &format!("host {other_host} is not allowed"));
    predicted(&one(&api, &format!("{cdn}/redirect?to={cdn}/cdn.png")));
    refused(&one(&api, &format!("{cdn}/redirect?to={other}/cdn.png")), "is not allowed");
    refused(&one(&api, "file:///etc/passwd"), "");

    // A host on the allowed list that resolves to a loopback address is still refused
    // unless non-public addresses are allowed.
    let listed = api.with_source_policy(SourcePolicy {
        allowed_hosts: Some(vec![other_host.to_string()]),
        ..SourcePolicy::restricted()
    });
    refused(&one(&listed, &format!("{other}/cdn.png")), "loopback");
}
