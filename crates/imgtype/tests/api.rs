//! The backend API: order kept, ERROR for bad images, no files written, usable from
//! many threads at once; and the decision rule with per-class thresholds.

mod common;

use std::path::Path;
use std::sync::Arc;

use imgtype::infer::{ImageClassificationApi, Predictor};
use imgtype::{Config, ImageTypeClassifier};
use tch::Device;

fn small_config() -> Config {
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 3;
    config
}

fn write_images(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, color) in [[250u8, 250, 250], [20, 20, 200], [200, 30, 30], [30, 160, 30]].iter().enumerate() {
        let path = dir.join(format!("img{i}.png"));
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([color[0], color[1].wrapping_add((x * y) as u8), color[2]]))
            .save(&path)
            .unwrap();
        paths.push(path.display().to_string());
    }
    std::fs::write(dir.join("broken.jpg"), b"not an image").unwrap();
    paths
}

/// A fresh model file (drawn after seeding with `seed`) whose API merges calls into passes of
/// up to 8 images, waiting at most `max_delay_ms` for a caller still decoding.
fn batching_model(dir: &Path, seed: i64, max_delay_ms: u64) -> std::path::PathBuf {
    let mut config = small_config();
    config.inference.batch_size = 8;
    config.inference.max_batch_delay_ms = max_delay_ms;
    let model_path = dir.join("model.safetensors");
    tch::manual_seed(seed);
    ImageTypeClassifier::new(&config, Device::Cpu).save(&model_path).unwrap();
    model_path
}

/// The API on the model file at `path`, reading any path or URL it is given.
fn trusted_api(path: &Path) -> ImageClassificationApi {
    let api = ImageClassificationApi::with_device(path, Device::Cpu).unwrap();
    api.with_source_policy(imgtype::data::SourcePolicy::trusted()).unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    names
}

#[test]
fn predicts_in_order_with_errors_in_place_and_writes_nothing() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageClassificationApi>();

    let dir = tempfile::tempdir().unwrap();
    // Keys as a backend passes them: relative to the model's image folder.
    let images: Vec<String> = write_images(dir.path())
        .iter()
        .map(|p| Path::new(p).file_name().unwrap().to_string_lossy().to_string())
        .collect();
    tch::manual_seed(1);
    let model_path = dir.path().join("model.safetensors");
    let mut config = small_config();
    config.data.base_image_path = Some(dir.path().to_path_buf());
    ImageTypeClassifier::new(&config, Device::Cpu).save(&model_path).unwrap();
    let before = files_in(dir.path());

    let api = ImageClassificationApi::with_device(&model_path, Device::Cpu).unwrap();
    let missing = "missing.jpg".to_string();
    let broken = "broken.jpg".to_string();
    let inputs = vec![
        images[0].clone(),
        missing.clone(),
        images[1].clone(),
        broken.clone(),
        images[2].clone(),
        images[3].clone(),
    ];
    let results = api.predict(&inputs);
    assert_eq!(results.len(), inputs.len());
    for (result, input) in results.iter().zip(&inputs) {
        assert_eq!(&result.image_path, input, "order kept");
    }
    for bad in [1, 3] {
        assert_eq!(results[bad].predicted_class, "ERROR");
        assert_eq!(results[bad].confidence, 0.0);
    }
    for good in [0, 2, 4, 5] {
        assert!(api.class_names().contains(&results[good].predicted_class));
        assert!(results[good].confidence > 0.0 && results[good].confidence <= 1.0);
    }
    assert!(api.predict::<String>(&[]).is_empty());
    assert_eq!(files_in(dir.path()), before, "the API wrote files");

    // Same answers from many threads at once.
    let api = Arc::new(api);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (api, inputs) = (api.clone(), inputs.clone());
            std::thread::spawn(move || api.predict(&inputs))
        })
        .collect();
    for handle in handles {
        let concurrent = handle.join().unwrap();
        for (a, b) in concurrent.iter().zip(&results) {
            assert_eq!(a.predicted_class, b.predicted_class);
            assert!((a.confidence - b.confidence).abs() < 1e-5);
        }
    }
}

#[test]
fn class_thresholds_pick_the_most_probable_passing_class() {
    let mut config = small_config();
    config.inference.class_thresholds.insert("care_label".into(), 0.9);
    config.inference.return_top_k = 2;
    let predictor = Predictor::from_model(ImageTypeClassifier::new(&config, Device::Cpu));
    // care_label is most probable but below its 0.9 threshold: detail_shot wins.
    let p = predictor.decide(&[0.6, 0.3, 0.05, 0.05]);
    assert_eq!(p.predicted_class, "detail_shot");
    assert!((p.confidence - 0.3).abs() < 1e-12);
    assert_eq!(p.top_k.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["care_label", "detail_shot"]);
    // Above its threshold it wins.
    assert_eq!(predictor.decide(&[0.95, 0.03, 0.01, 0.01]).predicted_class, "care_label");

    let mut strict = small_config();
    for class in ["care_label", "detail_shot", "full_shot", "neck_label"] {
        strict.inference.class_thresholds.insert(class.into(), 0.99);
    }
    let predictor = Predictor::from_model(ImageTypeClassifier::new(&strict, Device::Cpu));
    // No class passes: plain argmax.
    assert_eq!(predictor.decide(&[0.1, 0.2, 0.6, 0.1]).predicted_class, "full_shot");
}

#[test]
fn a_libtorch_error_in_the_forward_pass_fails_that_batch_only() {
    let dir = tempfile::tempdir().unwrap();
    let images = write_images(dir.path());
    tch::manual_seed(4);
    let predictor = Predictor::from_model(ImageTypeClassifier::new(&small_config(), Device::Cpu));
    let before = predictor.predict_keys(&images[..2]);
    // One channel where the model wants three: libtorch refuses the convolution.
    let err =
        predictor.probabilities(&tch::Tensor::zeros([2, 1, 32, 32], (tch::Kind::Float, Device::Cpu))).unwrap_err();
    assert!(err.contains("the model failed on this batch"), "{err}");
    let after = predictor.predict_keys(&images[..2]);
    let confidences = |r: &[Result<imgtype::infer::Prediction, String>]| -> Vec<f64> {
        r.iter().map(|p| p.as_ref().unwrap().confidence).collect()
    };
    assert_eq!(confidences(&before), confidences(&after), "the predictor works as before");
}

/// Calls that arrive together share forward passes: 8 threads each predicting one image
/// (one of them unreadable) get what a lone call gets, in far fewer than 8 passes; the bad
/// image fails only its own call; a caller that went away does not stall the others.
#[test]
fn concurrent_single_image_calls_are_merged_into_shared_forward_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut images = write_images(dir.path());
    images.truncate(4);
    let model_path = batching_model(dir.path(), 6, 200);
    let alone = trusted_api(&model_path);
    let expected: Vec<_> = images.iter().map(|key| alone.predict(std::slice::from_ref(key)).remove(0)).collect();
    assert_eq!(alone.forward_passes(), 4, "one pass per lone call");

    let api = Arc::new(trusted_api(&model_path));
    let broken = dir.path().join("broken.jpg").display().to_string();
    let keys: Vec<String> = (0..8).map(|i| if i == 5 { broken.clone() } else { images[i % 4].clone() }).collect();
    let start = Arc::new(std::sync::Barrier::new(keys.len()));
    let handles: Vec<_> = keys
        .iter()
        .cloned()
        .map(|key| {
            let (api, start) = (api.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                api.predict(std::slice::from_ref(&key)).remove(0)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, result) in results.iter().enumerate() {
        if i == 5 {
            assert_eq!(result.predicted_class, "ERROR", "the bad image fails only itself");
            continue;
        }
        let lone = &expected[i % 4];
        assert_eq!((&result.predicted_class, &result.image_path), (&lone.predicted_class, &lone.image_path));
        assert!((result.confidence - lone.confidence).abs() < 1e-5, "{result:?} vs {lone:?}");
    }
    let passes = api.forward_passes();
    eprintln!("8 concurrent single-image calls: {passes} forward pass(es)");
    assert!(passes < 7, "{passes} forward passes for 7 readable single-image calls");

    // A caller that gives up (its thread ends before the answer) leaves the rest working.
    let gone = {
        let api = api.clone();
        let key = images[0].clone();
        std::thread::spawn(move || drop(api.predict(std::slice::from_ref(&key))))
    };
    let after = api.predict(std::slice::from_ref(&images[1])).remove(0);
    gone.join().unwrap();
    assert_eq!(after.predicted_class, expected[1].predicted_class);
}

/// Serves `body` once per connection on 127.0.0.1, each answer `delay` after the request
/// came in; sends on the returned channel when a request has come in.
fn slow_server(body: Vec<u8>, delay: std::time::Duration) -> (String, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/photo.png", listener.local_addr().unwrap());
    let (arrived, arrivals) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = arrived.send(());
            std::thread::sleep(delay);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    (url, arrivals)
}

/// A call whose image is still being fetched is waited for, so calls coming more than a
/// moment apart still share a pass; but only up to `inference.max_batch_delay_ms`: a slow
/// fetch never holds other callers longer than that.
#[test]
fn a_caller_still_decoding_is_waited_for_up_to_the_batch_delay() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let images = write_images(dir.path());
    let body = std::fs::read(&images[2]).unwrap();
    let model_path = batching_model(dir.path(), 8, 400);
    let api = |_: ()| Arc::new(trusted_api(&model_path));
    let alone = api(());
    let lone = alone.predict(std::slice::from_ref(&images[0])).remove(0);
    let lone_fetched = alone.predict(std::slice::from_ref(&images[2])).remove(0);

    // The fetch takes 60 ms, well past any "calls that come together" gap: one pass anyway.
    let (url, arrivals) = slow_server(body.clone(), Duration::from_millis(60));
    let shared = api(());
    let fetching = {
        let (api, url) = (shared.clone(), url.clone());
        std::thread::spawn(move || api.predict(&[url]).remove(0))
    };
    arrivals.recv().unwrap();
    let started = Instant::now();
    let local = shared.predict(std::slice::from_ref(&images[0])).remove(0);
    let waited = started.elapsed();
    let fetched = fetching.join().unwrap();
    assert_eq!(fetched.predicted_class, lone_fetched.predicted_class, "{fetched:?}");
    assert!((fetched.confidence - lone_fetched.confidence).abs() < 1e-5, "{fetched:?} vs {lone_fetched:?}");
    assert_eq!(local.predicted_class, lone.predicted_class);
    assert!((local.confidence - lone.confidence).abs() < 1e-5, "{local:?} vs {lone:?}");
    assert_eq!(shared.forward_passes(), 1, "the local call waited for the one being fetched");
    assert!(waited >= Duration::from_millis(30), "it waited for the fetch: {waited:?}");

    // A fetch slower than the delay: the local call goes ahead after the delay, alone.
    let (url, arrivals) = slow_server(body, Duration::from_millis(3000));
    let shared = api(());
    let fetching = {
        let api = shared.clone();
        std::thread::spawn(move || api.predict(&[url]).remove(0))
    };
    arrivals.recv().unwrap();
    let started = Instant::now();
    let local = shared.predict(std::slice::from_ref(&images[0])).remove(0);
    let waited = started.elapsed();
    assert_eq!(local.predicted_class, lone.predicted_class);
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(2000), "{waited:?}");
    assert_eq!(shared.forward_passes(), 1, "the local call ran without the slow one");
    assert_ne!(fetching.join().unwrap().predicted_class, "ERROR");
    assert_eq!(shared.forward_passes(), 2);
}

/// A model file's `inference.temperature` divides the logits before the softmax in every
/// prediction (log-odds shrink by it), and `low_confidence` marks what falls under
/// `inference.confidence_threshold`.
#[test]
fn the_stored_temperature_scales_the_log_odds_and_low_confidence_follows_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let images = write_images(dir.path());
    tch::manual_seed(12);
    let mut model = ImageTypeClassifier::new(&small_config(), Device::Cpu);
    common::set_trained_statistics(&model);
    // Head weights of a trained size, so that the images get different, uneven scores.
    let mut head: Vec<_> =
        model.vs.variables().into_iter().filter(|(name, _)| name.starts_with("classifier")).collect();
    head.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| head.into_iter().for_each(|(_, mut t)| drop(t.uniform_(-0.2, 0.2))));
    let plain = dir.path().join("plain.safetensors");
    model.save(&plain).unwrap();
    model.set_temperature(0.25);
    let cooled = dir.path().join("cooled.safetensors");
    model.save(&cooled).unwrap();
    let load = |path: &Path| Predictor::load(path, Device::Cpu).unwrap();
    let (a, b) = (load(&plain).predict_keys(&images[..4]), load(&cooled).predict_keys(&images[..4]));
    for (a, b) in a.iter().zip(&b) {
        let (a, b) = (&a.as_ref().unwrap().probabilities, &b.as_ref().unwrap().probabilities);
        for (i, j) in [(0, 1), (1, 2), (2, 3)] {
            let (plain_odds, cooled_odds) = ((a[i] / a[j]).ln(), (b[i] / b[j]).ln());
            let expected = plain_odds / 0.25;
            assert!(
                (cooled_odds - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "{plain_odds} / 0.25 vs {cooled_odds}"
            );
        }
    }

    // Thresholds just above and just below the cooled model's confidence on the first image.
    let confidence = b[0].as_ref().unwrap().confidence;
    let mut keys = images[..1].to_vec();
    keys.push(dir.path().join("broken.jpg").display().to_string());
    for (threshold, low) in [(confidence + 0.01, true), (confidence - 0.01, false)] {
        let mut config = model.config().clone();
        config.inference.confidence_threshold = threshold;
        let mut reviewed = ImageTypeClassifier::new(&config, Device::Cpu);
        reviewed.load_tensors(&model.snapshot(), Path::new("the cooled model")).unwrap();
        let path = dir.path().join("reviewed.safetensors");
        reviewed.save(&path).unwrap();
        let results = trusted_api(&path).predict(&keys);
        assert!((results[0].confidence - confidence).abs() < 1e-6, "the temperature came along: {results:?}");
        assert_eq!(results[0].low_confidence, low, "threshold {threshold}: {results:?}");
        assert_eq!((results[1].predicted_class.as_str(), results[1].low_confidence), ("ERROR", false));
    }
}

/// Scores that are not finite numbers (a model that overflows on some image) are an error for
/// that image, never a prediction with confidence NaN; the other images keep theirs.
#[test]
fn scores_that_are_not_numbers_are_errors_for_their_image_only() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_images(dir.path());
    let predictor = Predictor::from_model(ImageTypeClassifier::new(&small_config(), Device::Cpu));
    let keys = paths[..3].to_vec();
    let mut loaded = predictor.load_keys(&keys);
    let images = loaded.take_images();
    let mut scores = predictor.scorer().score_images(&images).unwrap();
    scores[1].logits[2] = f32::INFINITY;
    scores[1].probabilities = vec![f64::NAN; 4];
    let outcomes = predictor.decide_loaded(loaded, Ok(scores));
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    let reason = outcomes[1].as_ref().unwrap_err();
    assert!(reason.contains("not a number"), "{reason}");
}
