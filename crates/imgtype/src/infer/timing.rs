//! Per-image latency and throughput of a `test` run (`timing.json`, the summary line).

use serde::Serialize;

/// Images per second and per-image latency of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TimingSummary {
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub mean_ms_per_image: f64,
    pub p50_ms_per_image: f64,
    pub p95_ms_per_image: f64,
    pub model_load_seconds: f64,
    /// What ran the forward passes, and in which number format ("openvino bf16").
    pub engine: String,
}

impl TimingSummary {
    pub(super) fn new(mut per_image_ms: Vec<f64>, seconds: f64, model_load_seconds: f64, engine: String) -> Self {
        per_image_ms.sort_by(f64::total_cmp);
        let n = per_image_ms.len();
        let quantile = |q: f64| if n == 0 { 0.0 } else { per_image_ms[((n - 1) as f64 * q).round() as usize] };
        Self {
            images: n,
            seconds,
            images_per_second: n as f64 / seconds.max(1e-9),
            mean_ms_per_image: if n == 0 { 0.0 } else { per_image_ms.iter().sum::<f64>() / n as f64 },
            p50_ms_per_image: quantile(0.5),
            p95_ms_per_image: quantile(0.95),
            model_load_seconds,
            engine,
        }
    }

    pub(super) fn log(&self) {
        tracing::info!(
            "{} images in {:.1} s ({:.1} images/s, {}); per image: mean {:.2} ms, p50 {:.2} ms, p95 {:.2} ms; model load {:.2} s",
            self.images,
            self.seconds,
            self.images_per_second,
            self.engine,
            self.mean_ms_per_image,
            self.p50_ms_per_image,
            self.p95_ms_per_image,
            self.model_load_seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_percentiles() {
        let t = TimingSummary::new((1..=100).map(f64::from).collect(), 2.0, 0.5, "libtorch fp32".into());
        assert_eq!(t.images, 100);
        assert_eq!(t.p50_ms_per_image, 51.0);
        assert_eq!(t.p95_ms_per_image, 95.0);
        assert!((t.images_per_second - 50.0).abs() < 1e-9);
    }
}
