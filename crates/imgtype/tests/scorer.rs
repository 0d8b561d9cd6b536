//! The batch scorer with engines other than libtorch plugged in behind `InferenceEngine`:
//! what the engine returns is what every image gets (softmax in class order), a bad image
//! costs only its own slot, and an engine that fails or panics costs only its batch.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use imgtype::data::{ImageRecord, ImageSource};
use imgtype::eval::evaluate_records;
use imgtype::score::{BatchScorer, InferenceEngine, ScoringSettings};
use tch::{Kind, Tensor};

/// Logits from the image itself: class c scores the mean of channel c (and 0 for class 3),
/// so a red image is class 0, a green one class 1, a blue one class 2.
struct ChannelMeans {
    calls: AtomicUsize,
}

impl InferenceEngine for ChannelMeans {
    fn logits(&self, batch: &Tensor) -> Result<Tensor> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let means = batch.mean_dim([2i64, 3].as_slice(), false, Kind::Float) * 10.0;
        Ok(Tensor::cat(&[means.shallow_clone(), means.zeros_like().narrow(1, 0, 1)], 1))
    }

    fn describe(&self) -> String {
        "channel means".into()
    }

    fn kind(&self) -> Kind {
        Kind::Float
    }
}

/// An engine that fails the way libtorch does on a bad call: it panics.
struct Panicking;

impl InferenceEngine for Panicking {
    fn logits(&self, _: &Tensor) -> Result<Tensor> {
        panic!("Tensor shape mismatch (simulated)")
    }

    fn describe(&self) -> String {
        "panicking".into()
    }

    fn kind(&self) -> Kind {
        Kind::Float
    }
}

/// An engine that answers with the wrong number of outputs.
struct WrongWidth;

impl InferenceEngine for WrongWidth {
    fn logits(&self, batch: &Tensor) -> Result<Tensor> {
        Ok(Tensor::zeros([batch.size()[0], 3], (Kind::Float, tch::Device::Cpu)).flatten(0, -1).narrow(0, 0, 1))
    }

    fn describe(&self) -> String {
        "wrong width".into()
    }

    fn kind(&self) -> Kind {
        Kind::Float
    }
}

fn class_names() -> Vec<String> {
    ["red", "green", "blue", "none"].map(String::from).to_vec()
}

/// Three pure-colour images and one file that is not an image, as records.
fn records(dir: &std::path::Path) -> Vec<ImageRecord> {
    let mut records = Vec::new();
    for (name, colour) in
        [("red", [250u8, 10, 10]), ("broken", [0, 0, 0]), ("green", [10, 250, 10]), ("blue", [10, 10, 250])]
    {
        let path = dir.join(format!("{name}.png"));
        if name == "broken" {
            std::fs::write(&path, b"not an image").unwrap();
        } else {
            image::RgbImage::from_pixel(20, 20, image::Rgb(colour)).save(&path).unwrap();
        }
        let class = if name == "broken" { "red" } else { name };
        records.push(ImageRecord {
            product_id: name.into(),
            image_path: path.display().to_string(),
            image_type: class.into(),
        });
    }
    records
}

fn scorer(engine: Box<dyn InferenceEngine>) -> BatchScorer {
    let settings = ScoringSettings { input_size: 16, batch_size: 2, workers: 2 };
    BatchScorer::new(engine, ImageSource::local(None), settings, 4)
}

#[test]
fn a_plugged_in_engine_scores_every_readable_image_and_a_bad_one_costs_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(dir.path());
    let engine = ChannelMeans { calls: AtomicUsize::new(0) };
    let scorer = scorer(Box::new(engine));
    let refs: Vec<&ImageRecord> = records.iter().collect();
    let outcomes = scorer.score_loaded(scorer.load(&refs));
    assert_eq!(outcomes.len(), 4, "one outcome per record, in order");
    let reason = outcomes[1].as_ref().unwrap_err();
    assert!(reason.contains("broken.png"), "the reason names the file: {reason}");
    for (outcome, expected) in [(&outcomes[0], 0), (&outcomes[2], 1), (&outcomes[3], 2)] {
        let scores = outcome.as_ref().unwrap();
        assert_eq!(scores.logits.len(), 4);
        let sum: f64 = scores.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "probabilities sum to 1: {scores:?}");
        let argmax = (0..4).max_by(|&a, &b| scores.probabilities[a].total_cmp(&scores.probabilities[b])).unwrap();
        assert_eq!(argmax, expected, "{scores:?}");
        // The softmax of the engine's own logits.
        let max = scores.logits.iter().cloned().fold(f32::MIN, f32::max);
        let exp: Vec<f64> = scores.logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
        let total: f64 = exp.iter().sum();
        for (p, e) in scores.probabilities.iter().zip(&exp) {
            assert!((p - e / total).abs() < 1e-5);
        }
    }

    // A split evaluated through the same scorer: the unreadable image left out and counted.
    let evaluation = evaluate_records(&scorer, &class_names(), &records, None, "validation").unwrap();
    assert_eq!(evaluation.unreadable, 1);
    assert_eq!(evaluation.y_true, vec![0, 1, 2]);
    let rule = imgtype::score::DecisionRule::from_thresholds(vec![0.0; 4]);
    assert_eq!(evaluation.metrics(&class_names(), &rule).accuracy, 1.0);
    assert_eq!(scorer.engine().describe(), "channel means");
}

#[test]
fn an_engine_that_fails_costs_its_batch_and_the_scorer_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(dir.path());
    let refs: Vec<&ImageRecord> = records.iter().collect();
    for engine in [Box::new(Panicking) as Box<dyn InferenceEngine>, Box::new(WrongWidth)] {
        let scorer = scorer(engine);
        for _ in 0..2 {
            let outcomes = scorer.score_loaded(scorer.load(&refs));
            assert!(outcomes[1].as_ref().unwrap_err().contains("broken.png"), "its own reason first");
            for outcome in [&outcomes[0], &outcomes[2], &outcomes[3]] {
                let reason = outcome.as_ref().unwrap_err();
                assert!(reason.contains("the model failed on this batch"), "{reason}");
            }
        }
        let err = evaluate_records(&scorer, &class_names(), &records, None, "test").err().unwrap();
        assert!(err.to_string().contains("none of its 4 images could be read and scored"), "{err}");
    }
}
