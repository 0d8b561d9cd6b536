//! Remote images through a real HTTP server on 127.0.0.1: success, cache, retries,
//! a 404, a response slower than the timeout, and a body that is not an image.
#![cfg(feature = "remote")]

use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgtype::config::DataConfig;
use imgtype::data::image::load_rgb;
use imgtype::data::source::Location;
use imgtype::data::ImageSource;
use imgtype::keys::Url;

struct TestServer {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn png_bytes() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(6, 4, image::Rgb([10, 200, 30]));
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// Serves /ok.png, /missing (404), /slow.png (3 s late), /text (not an image) and
/// /flaky.png (500 on the first request, then the image); counts requests.
fn start_server() -> TestServer {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let (server_loop, hits_loop) = (server.clone(), hits.clone());
    std::thread::spawn(move || {
        for request in server_loop.incoming_requests() {
            hits_loop.fetch_add(1, Ordering::SeqCst);
            let flaky_calls = flaky_calls.clone();
            std::thread::spawn(move || {
                let png = png_bytes();
                let response = match request.url() {
                    "/ok.png" | "/images/ok.png" => tiny_http::Response::from_data(png).with_status_code(200),
                    "/slow.png" => {
                        std::thread::sleep(Duration::from_secs(3));
                        tiny_http::Response::from_data(png).with_status_code(200)
                    }
                    "/text" => tiny_http::Response::from_data(b"hello, not an image".to_vec()).with_status_code(200),
                    "/flaky.png" if flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 => {
                        tiny_http::Response::from_data(b"busy".to_vec()).with_status_code(500)
                    }
                    "/flaky.png" => tiny_http::Response::from_data(png).with_status_code(200),
                    _ => tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404),
                };
                let _ = request.respond(response);
            });
        }
    });
    TestServer { base: format!("http://127.0.0.1:{port}"), hits }
}

fn source(base_url: Option<String>, cache: Option<std::path::PathBuf>, retries: u32) -> ImageSource {
    ImageSource::from_config(&DataConfig {
        base_image_path: None,
        base_image_url: base_url,
        image_cache_dir: cache,
        download_timeout_secs: 1.0,
        download_retries: retries,
        ..DataConfig::default()
    })
}

#[test]
fn absolute_urls_and_base_url_keys_download_and_decode() {
    let server = start_server();
    let src = source(Some(format!("{}/images", server.base)), None, 0);
    let image = load_rgb(&src, &format!("{}/ok.png", server.base)).unwrap();
    assert_eq!(image.dimensions(), (6, 4));
    let expected = Url::parse(&format!("{}/images/ok.png", server.base)).unwrap();
    assert_eq!(src.locate("ok.png").unwrap(), Location::Remote(expected));
    assert_eq!(load_rgb(&src, "ok.png").unwrap().get_pixel(0, 0), &image::Rgb([10, 200, 30]));
}

#[test]
fn cache_avoids_a_second_download() {
    let server = start_server();
    let cache = tempfile::tempdir().unwrap();
    let src = source(None, Some(cache.path().to_path_buf()), 0);
    let url = format!("{}/ok.png", server.base);
    load_rgb(&src, &url).unwrap();
    load_rgb(&src, &url).unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "the second load came from the cache");
    let cached: Vec<_> = imgtype_testkit::walk(cache.path());
    assert_eq!(cached.len(), 1, "{cached:?}");
}

#[test]
fn not_found_is_not_retried_and_names_the_status() {
    let server = start_server();
    let src = source(None, None, 3);
    let err = format!("{:#}", load_rgb(&src, &format!("{}/missing", server.base)).unwrap_err());
    assert!(err.contains("404") && err.contains("/missing"), "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn slow_response_times_out() {
    let server = start_server();
    let src = source(None, None, 0);
    let started = Instant::now();
    let err = format!("{:#}", load_rgb(&src, &format!("{}/slow.png", server.base)).unwrap_err());
    assert!(started.elapsed() < Duration::from_millis(2500), "timeout of 1 s not honoured: {:?}", started.elapsed());
    assert!(err.contains("slow.png"), "{err}");
}

#[test]
fn body_that_is_not_an_image_is_a_clear_error() {
    let server = start_server();
    let err = format!("{:#}", load_rgb(&source(None, None, 0), &format!("{}/text", server.base)).unwrap_err());
    assert!(err.contains("/text") && err.contains("not an image"), "{err}");
}

#[test]
fn server_errors_are_retried() {
    let server = start_server();
    let image = load_rgb(&source(None, None, 2), &format!("{}/flaky.png", server.base)).unwrap();
    assert_eq!(image.dimensions(), (6, 4));
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn cloudfront_domain_is_used_when_no_base_is_set() {
    std::env::set_var("S3_CLOUDFRONT_DOMAIN", "cdn.example.test");
    let src = source(None, None, 0);
    std::env::remove_var("S3_CLOUDFRONT_DOMAIN");
    assert_eq!(
        src.locate("product/unhashed/abc").unwrap(),
        Location::Remote(Url::parse("https://cdn.example.test/product/unhashed/abc").unwrap())
    );
    let local = ImageSource::local(Some("/data/images".into()));
    assert_eq!(local.locate("product/x.jpg").unwrap(), Location::Local("/data/images/product/x.jpg".into()));
}
