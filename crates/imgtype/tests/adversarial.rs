//! Property-based and differential tests of the parsers that read bytes we did not make:
//! image keys and URLs, `torch.save` archives, safetensors headers, image headers. Each
//! property runs a bounded number of generated cases (`PROPTEST_CASES` raises it), and the
//! seed corpus in `tests/data/hostile_keys.txt` runs through the same checks every time; a
//! failure proptest finds is saved under `proptest-regressions/` and then becomes a plain
//! regression test (a seed line, or a test of its own).

use std::io::Write;
use std::path::Path;

use imgtype::keys::{join_under, parse_key, AllowedHost, Key, Url};
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, max_shrink_iters: 2000, ..ProptestConfig::default() }
}

/// Pieces of URLs that parsers have read differently: separators, user info, encodings,
/// IPv6 and numeric IPv4 forms, unicode hosts, ports.
fn url_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("http://".to_string()),
        Just("HTTP://".to_string()),
        Just("https:".to_string()),
        Just("//".to_string()),
        Just("\\".to_string()),
        Just("\\\\".to_string()),
        Just("@".to_string()),
        Just(":".to_string()),
        Just("/".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("%2e".to_string()),
        Just("%2F".to_string()),
        Just("%40".to_string()),
        Just("%5c".to_string()),
        Just("..".to_string()),
        Just("[::1]".to_string()),
        Just("[::ffff:127.0.0.1]".to_string()),
        Just("127.0.0.1".to_string()),
        Just("0x7f.1".to_string()),
        Just("2130706433".to_string()),
        Just("allowed.test".to_string()),
        Just("other.test".to_string()),
        Just("ÅLLOWED.test".to_string()),
        Just("xn--".to_string()),
        Just(":8080".to_string()),
        Just(":65536".to_string()),
        Just("\t".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("\u{3002}".to_string()),
        "[a-z0-9.]{0,6}".prop_map(String::from),
    ]
}

/// A scheme, some pieces, a host (the allowed one often), perhaps a port, more pieces: so
/// that generated URLs often name the allowed host next to another one.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just("http://"), Just("HTTP://"), Just("https:"), Just("http:\\"), Just("")];
    let host = prop_oneof![
        Just("allowed.test".to_string()),
        Just("allowed.test:8080".to_string()),
        Just("other.test".to_string()),
        url_piece()
    ];
    let pieces = || proptest::collection::vec(url_piece(), 0..4).prop_map(|p| p.concat());
    (scheme, pieces(), host, pieces(), prop_oneof![Just(""), Just(":8080")], pieces())
        .prop_map(|(s, a, h, b, port, c)| format!("{s}{a}{h}{b}{port}{c}"))
}

/// What the HTTP client does with a URL it is handed: ureq formats it and parses the text
/// again, then connects to that host and port.
fn as_the_client_reads(url: &Url) -> (Option<String>, Option<u16>, String) {
    let again = Url::parse(url.as_str()).expect("the client parses what the policy parsed");
    (again.host_str().map(String::from), again.port_or_known_default(), again.path().to_string())
}

fn check_key(text: &str) -> Result<(), TestCaseError> {
    let allowed = AllowedHost::parse("allowed.test:8080").unwrap();
    if let Ok(Key::Url(url)) = parse_key(text) {
        let (host, port, path) = as_the_client_reads(&url);
        // One parse: the client connects where the policy looked.
        prop_assert_eq!(host.as_deref(), url.host_str());
        prop_assert_eq!(port, url.port_or_known_default());
        prop_assert_eq!(path, url.path());
        // Nothing a reader of the text could take for another host got through.
        prop_assert!(!text.contains('\\') && !text.chars().any(char::is_control));
        prop_assert!(url.username().is_empty() && url.password().is_none());
        prop_assert!(url.scheme() == "http" || url.scheme() == "https");
        if allowed.matches(&url) {
            prop_assert_eq!(url.host_str(), Some("allowed.test"));
            prop_assert_eq!(url.port_or_known_default(), Some(8080));
        }
    }
    Ok(())
}

fn check_relative(key: &str) -> Result<(), TestCaseError> {
    let base = Url::parse("https://cdn.test/images/").unwrap();
    if let Ok(url) = join_under(&base, key) {
        let (host, port, path) = as_the_client_reads(&url);
        prop_assert_eq!(host.as_deref(), Some("cdn.test"));
        prop_assert_eq!(port, Some(443));
        prop_assert!(path.starts_with("/images/"), "{} leaves the prefix: {}", key, path);
        prop_assert!(!path.to_ascii_lowercase().contains("%2e") && !path.contains("/../"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn a_url_is_read_once_and_the_client_reads_it_the_same(text in url_like()) {
        check_key(&text)?;
    }

    #[test]
    fn any_string_is_read_without_panicking(text in "\\PC{0,40}") {
        let _ = parse_key(&text);
        check_key(&text)?;
        check_relative(&text)?;
    }

    #[test]
    fn relative_keys_stay_under_the_cdn_prefix(key in url_like()) {
        check_relative(&key)?;
    }

    #[test]
    fn allowed_hosts_match_only_their_host(entry in url_like(), text in url_like()) {
        if let (Ok(allowed), Ok(Key::Url(url))) = (AllowedHost::parse(&entry), parse_key(&text)) {
            if allowed.matches(&url) {
                let listed = Url::parse(&format!("http://{}/", entry.trim())).unwrap();
                prop_assert_eq!(listed.host_str(), url.host_str());
            }
        }
    }
}

/// The seed corpus: keys that broke parsers somewhere, run every time.
#[test]
fn the_seed_corpus_of_hostile_keys() {
    let corpus = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile_keys.txt"))
        .expect("seed corpus");
    let mut accepted = 0;
    for line in corpus.lines().filter(|l| !l.is_empty() && !l.starts_with("# ")) {
        let key = line.replace("\\t", "\t").replace("\\n", "\n");
        check_key(&key).unwrap();
        check_relative(&key).unwrap();
        accepted += matches!(parse_key(&key), Ok(Key::Url(_))) as usize;
    }
    assert!(accepted > 0, "some seeds are plain URLs and must be accepted");
}

// torch.save archives, safetensors files and image headers: whatever the bytes, an error
// or a value, never a panic, an abort or a hang.

fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        for (name, data) in entries {
            zip.start_file(
                *name,
                zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored),
            )
            .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
    buffer.into_inner()
}

/// A real state dict's pickle, as torch.save writes it (one float tensor `w` of 4 values).
fn small_state_dict_pickle() -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02".to_vec();
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x04tq\x08QK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\tRq\ns.");
    p
}

fn read_torch_bytes(bytes: &[u8]) -> anyhow::Result<imgtype::model::torch_file::Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pth");
    std::fs::write(&path, bytes).unwrap();
    imgtype::model::torch_file::read_torch_file(&path)
}

#[test]
fn the_hand_written_state_dict_pickle_reads() {
    let floats: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = zip_with(&[("archive/data.pkl", &small_state_dict_pickle()), ("archive/data/0", &floats)]);
    let value = read_torch_bytes(&bytes).unwrap();
    let state = value.as_state_dict().unwrap();
    assert_eq!(state[0].0, "w");
    assert_eq!(Vec::<f32>::try_from(&state[0].1).unwrap(), vec![1., 2., 3., 4.]);
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn mutated_pickles_are_errors_or_values(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut pickle = small_state_dict_pickle();
        for (at, byte) in flips {
            let i = at.index(pickle.len());
            pickle[i] = byte;
        }
        pickle.truncate(cut.index(pickle.len()) + 1);
        let floats = [0u8; 16];
        let bytes = zip_with(&[("archive/data.pkl", &pickle), ("archive/data/0", &floats)]);
        let started = std::time::Instant::now();
        let _ = read_torch_bytes(&bytes);
        prop_assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn random_pickles_are_errors_or_values(pickle in proptest::collection::vec(any::<u8>(), 0..400)) {
        let bytes = zip_with(&[("archive/data.pkl", &pickle)]);
        let _ = read_torch_bytes(&bytes);
    }

    #[test]
    fn random_archives_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut archive = b"PK\x03\x04".to_vec();
        archive.extend(bytes);
        let _ = read_torch_bytes(&archive);
    }

    #[test]
    fn safetensors_headers_are_errors_or_tensors(
        header in "\\{(\"[a-z_]{0,8}\":\\{\"dtype\":\"(F32|I64|U8|BOOL|F16)\",\"shape\":\\[[0-9,-]{0,12}\\],\"data_offsets\":\\[[0-9,-]{0,14}\\]\\},?){0,3}(\"__metadata__\":\\{\"[a-z]{0,5}\":\"[a-z0-9]{0,4}\"\\})?\\}",
        data in proptest::collection::vec(any::<u8>(), 0..64),
        declared in prop_oneof![Just(None), (0u64..u64::MAX).prop_map(Some)],
    ) {
        let length = declared.unwrap_or(header.len() as u64);
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(data);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let _ = imgtype::model::file::read_safetensors(&path);
        let _ = imgtype::model::file::ModelFile::read(&path);
    }

    #[test]
    fn image_headers_are_screened_and_decoded_without_panicking(
        base in prop_oneof![Just("png"), Just("jpeg"), Just("gif"), Just("bmp"), Just("webp")],
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = damaged(small_image(base), flips, cut);
        let limits = imgtype::data::decode::DecodeLimits::default();
        let _ = imgtype::data::decode::check_readable(&bytes, "x", limits);
        let _ = imgtype::data::decode::decode_for_size(&bytes, "x", limits, Some(16));
    }
}

/// Small TIFFs in the compressions we decode beyond the tiff crate (written by Pillow, three
/// strips each): LZMA with horizontal prediction, Group 3 fax, CCITT modified Huffman.
const EXTRA_TIFFS: [&[u8]; 3] = [
    include_bytes!("data/small_lzma.tif"),
    include_bytes!("data/small_group3.tif"),
    include_bytes!("data/small_ccitt.tif"),
];

#[test]
fn the_extra_tiff_compressions_decode() {
    for bytes in EXTRA_TIFFS {
        let image =
            imgtype::data::decode::decode_bytes(bytes, "x", imgtype::data::decode::DecodeLimits::default()).unwrap();
        assert_eq!(image.dimensions(), (24, 18));
    }
}

/// Found by a hostile review: LZMA TIFFs of a few KB whose tags declare 100 or 1,000
/// samples per pixel, whose strips would inflate to 169 GB (an abort) or, all pointing at
/// one stream, to 4 GB. Refused from their tags, before anything is decompressed.
#[test]
fn lzma_tiffs_whose_tags_inflate_beyond_the_pixels_are_refused_at_once() {
    for bytes in [
        &include_bytes!("data/hostile_lzma_1000_samples.tif")[..],
        include_bytes!("data/hostile_lzma_planar_100_samples.tif"),
    ] {
        let started = std::time::Instant::now();
        let error = imgtype::data::decode::decode_bytes(bytes, "x", imgtype::data::decode::DecodeLimits::default())
            .unwrap_err();
        assert!(format!("{error:#}").contains("samples"), "{error:#}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}

proptest! {
    #![proptest_config(cases(300))]

    /// Their strips, offsets, counts and directories damaged: an error or an image, never a
    /// panic, and never more memory than the header's size allows.
    #[test]
    fn damaged_fax_and_lzma_tiffs_are_errors_or_images(
        which in 0..3usize,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = damaged(EXTRA_TIFFS[which].to_vec(), flips, cut);
        let limits = imgtype::data::decode::DecodeLimits::default();
        let _ = imgtype::data::decode::check_readable(&bytes, "x", limits);
        if let Ok(image) = imgtype::data::decode::decode_bytes(&bytes, "x", limits) {
            prop_assert!(u64::from(image.width()) * u64::from(image.height()) <= 1 << 32);
        }
    }
}

/// `bytes` with the bytes at the `flips` positions replaced, cut after `cut`.
fn damaged(mut bytes: Vec<u8>, flips: Vec<(prop::sample::Index, u8)>, cut: prop::sample::Index) -> Vec<u8> {
    for (at, byte) in flips {
        let i = at.index(bytes.len());
        bytes[i] = byte;
    }
    bytes.truncate(cut.index(bytes.len()) + 1);
    bytes
}

fn small_image(format: &str) -> Vec<u8> {
    let image = image::RgbImage::from_fn(24, 18, |x, y| image::Rgb([(x * 10) as u8, (y * 13) as u8, 90]));
    let format = match format {
        "png" => image::ImageFormat::Png,
        "jpeg" => image::ImageFormat::Jpeg,
        "gif" => image::ImageFormat::Gif,
        "bmp" => image::ImageFormat::Bmp,
        _ => image::ImageFormat::WebP,
    };
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    bytes
}
