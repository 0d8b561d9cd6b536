//! What `test --image-path` prints: human lines, or JSON with `--json`.

use super::{Prediction, Predictor};

pub fn format_single(predictor: &Predictor, image: &str, prediction: &Prediction, json: bool) -> String {
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
