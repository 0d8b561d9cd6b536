//! What `test` prints on stdout: one image's prediction, a CSV's or the dataset's summary
//! line, a threshold fit, an INT8 calibration.

use imgtype::infer::{CsvReport, DatasetReport, Int8Calibration, Prediction, Predictor, ThresholdFit};

/// One image's prediction: human lines, or JSON with `json`.
pub fn print_single(predictor: &Predictor, image: &str, prediction: &Prediction, json: bool) {
    print!("{}", format_single(predictor, image, prediction, json));
}

fn format_single(predictor: &Predictor, image: &str, prediction: &Prediction, json: bool) -> String {
    let names = predictor.class_names();
    if json {
        let probabilities: serde_json::Map<String, serde_json::Value> =
            names.iter().zip(&prediction.probabilities).map(|(n, p)| (n.clone(), (*p).into())).collect();
        let value = serde_json::json!({
            "image_path": image,
            "predicted_class": prediction.predicted_class,
            "confidence": prediction.confidence,
            "top_k": prediction.top_k.iter().map(|(c, p)| serde_json::json!({"class": c, "probability": p})).collect::<Vec<_>>(),
            "probabilities": probabilities,
        });
        return format!("{}\n", serde_json::to_string_pretty(&value).expect("json"));
    }
    let mut out = format!("{image}: {} (confidence {:.4})\n", prediction.predicted_class, prediction.confidence);
    let top: Vec<String> = prediction.top_k.iter().map(|(c, p)| format!("{c} {p:.4}")).collect();
    out.push_str(&format!("  top-{}: {}\n", prediction.top_k.len(), top.join(", ")));
    for (name, p) in names.iter().zip(&prediction.probabilities) {
        out.push_str(&format!("  {name:<14} {p:.4}\n"));
    }
    out
}

/// A CSV of images predicted.
pub fn print_csv(report: &CsvReport) {
    println!(
        "{} predictions ({} failed) written to {}; {:.1} images/s",
        report.rows,
        report.failed,
        report.output_path.display(),
        report.timing.images_per_second
    );
}

/// The whole dataset predicted: accuracy per split, then the timing and where results are.
pub fn print_dataset(report: &DatasetReport) {
    for (split, accuracy) in &report.accuracy_by_split {
        println!("{split:<10} accuracy {accuracy:.4}");
    }
    println!(
        "{} images ({} failed), {:.2} ms per image, {:.1} images/s; results in {}",
        report.timing.images,
        report.failed,
        report.timing.mean_ms_per_image,
        report.timing.images_per_second,
        report.output_dir.display()
    );
}

/// `--fit-thresholds`: the thresholds, the figures before and after, as text or JSON.
pub fn print_threshold_fit(fit: &ThresholdFit, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(fit).expect("a threshold fit is JSON"));
        return;
    }
    let shown: Vec<String> = fit.thresholds.iter().map(|(c, t)| format!("{c} {t:.2}")).collect();
    println!("thresholds: {}", if shown.is_empty() { "none (argmax is best)".into() } else { shown.join(", ") });
    println!("validation {}: {:.4} -> {:.4}", fit.metric, fit.validation_before, fit.validation_after);
    println!("test       {}: {:.4} -> {:.4}", fit.metric, fit.test_before, fit.test_after);
    println!("test       accuracy: {:.4} -> {:.4}", fit.test_accuracy_before, fit.test_accuracy_after);
    println!("model with thresholds: {}", fit.model_file.display());
}

pub fn print_int8_calibration(calibration: &Int8Calibration) {
    println!("INT8 ranges of {} convolutions measured on {} images", calibration.convolutions, calibration.images);
    for reason in &calibration.unreadable {
        println!("unreadable, skipped: {reason}");
    }
    println!("model with INT8 ranges (run it with --precision int8): {}", calibration.output_path.display());
}
