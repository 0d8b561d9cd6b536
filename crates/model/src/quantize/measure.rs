//! Measuring the INT8 ranges: each backbone convolution's input over calibration images,
//! run twice through the fp32 inference model (extremes, then a histogram of magnitudes).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::{seal, ActivationRanges, ConvolutionInput};
use crate::fused::FusedClassifier;
use crate::ImageTypeClassifier;

/// Each activation's range is clipped at this percentile of its magnitudes. Chosen on the
/// demo model (EfficientNet-B0, 64 px; INT8 as fp32 on its 376 images): min/max 18%,
/// 99.999th 57%, 99.99th 98.9%, 99.95th 99.5%, 99.9th 98.9%. Rare large activations widen
/// the range until every ordinary value's rounding noise outweighs clipping them.
pub const CLIP_PERCENTILE: f64 = 99.95;

/// Bins of the magnitude histogram the percentile is read from.
const HISTOGRAM_BINS: i64 = 8192;

/// What one convolution's inputs showed: the first pass's extremes and channel sums, the
/// second pass's histogram of magnitudes on `[0, reach]`.
struct Accumulator {
    min: f32,
    max: f32,
    sums: Vec<f64>,
    positions: f64,
    histogram: Vec<i64>,
}

impl Accumulator {
    fn new(channels: usize) -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            sums: vec![0.0; channels],
            positions: 0.0,
            histogram: vec![0; HISTOGRAM_BINS as usize],
        }
    }

    fn reach(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    fn add_extremes(&mut self, input: &Tensor) {
        let input = input.to_kind(Kind::Float);
        self.min = self.min.min(input.min().double_value(&[]) as f32);
        self.max = self.max.max(input.max().double_value(&[]) as f32);
        let sums = input.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        for (total, sum) in self.sums.iter_mut().zip(Vec::<f64>::try_from(sums).expect("CPU sums")) {
            *total += sum;
        }
        let size = input.size();
        self.positions += (size[0] * size[2] * size[3]) as f64;
    }

    fn add_to_histogram(&mut self, input: &Tensor) {
        let reach = f64::from(self.reach());
        if reach <= 0.0 || reach.is_nan() {
            return;
        }
        let bins = (input.to_kind(Kind::Float).abs() * (HISTOGRAM_BINS as f64 / reach)).floor();
        let bins = bins.clamp(0.0, (HISTOGRAM_BINS - 1) as f64).to_kind(Kind::Int64).flatten(0, -1);
        let counts = bins.bincount::<Tensor>(None, HISTOGRAM_BINS);
        for (total, count) in self.histogram.iter_mut().zip(Vec::<i64>::try_from(counts).expect("CPU counts")) {
            *total += count;
        }
    }

    /// The upper edge of the bin where the [`CLIP_PERCENTILE`]th percentile falls.
    fn clip(&self) -> f32 {
        let total: i64 = self.histogram.iter().sum();
        let wanted = (total as f64 * CLIP_PERCENTILE / 100.0).ceil() as i64;
        let mut seen = 0;
        let bin = self.histogram.iter().position(|&count| {
            seen += count;
            seen >= wanted
        });
        let bin = bin.unwrap_or(HISTOGRAM_BINS as usize - 1);
        self.reach() * (bin + 1) as f32 / HISTOGRAM_BINS as f32
    }

    fn finish(self) -> ConvolutionInput {
        let channel_means = self.sums.iter().map(|sum| (sum / self.positions.max(1.0)) as f32).collect();
        ConvolutionInput { min: self.min, max: self.max, clip: self.clip(), channel_means }
    }
}

/// Measures `model`'s convolution inputs on `batches` normalised batches (`[N, 3, S, S]`
/// on the model's device, `batch(i)` the i-th; made on demand, as they are needed twice and
/// could fill memory), run through the fp32 inference model: extremes first, then the
/// histograms their percentiles come from.
pub fn measure(
    model: &ImageTypeClassifier,
    batches: usize,
    batch: impl Fn(usize) -> Tensor,
) -> Result<ActivationRanges> {
    let fused = FusedClassifier::new(model, Kind::Float);
    let mut accumulators: Vec<Accumulator> = Vec::new();
    let mut images = 0;
    for batch in (0..batches).map(&batch) {
        images += batch.size()[0] as usize;
        let mut index = 0;
        let _logits = fused.forward_observing_convolutions(&batch, &mut |input: &Tensor| {
            if index == accumulators.len() {
                accumulators.push(Accumulator::new(input.size()[1] as usize));
            }
            accumulators[index].add_extremes(input);
            index += 1;
        });
    }
    if images == 0 {
        bail!("no images to measure the INT8 ranges on");
    }
    if let Some(index) = accumulators.iter().position(|a| !(a.min.is_finite() && a.max.is_finite())) {
        bail!("convolution {index} saw values that are not finite numbers: the model overflows on these images");
    }
    for batch in (0..batches).map(batch) {
        let mut index = 0;
        let _logits = fused.forward_observing_convolutions(&batch, &mut |input: &Tensor| {
            accumulators[index].add_to_histogram(input);
            index += 1;
        });
    }
    let convolutions: Vec<ConvolutionInput> = accumulators.into_iter().map(Accumulator::finish).collect();
    let sha256 = seal(model, images, &convolutions);
    Ok(ActivationRanges { images, sha256, convolutions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clip_is_the_percentile_of_magnitudes() {
        let mut accumulator = Accumulator::new(1);
        let values = Tensor::arange(10_000, (Kind::Float, tch::Device::Cpu)).view([1, 1, 100, 100]) + 1.0;
        accumulator.add_extremes(&values);
        accumulator.add_to_histogram(&values);
        let range = accumulator.finish();
        assert_eq!((range.min, range.max), (1.0, 10_000.0));
        let expected = 10_000.0 * CLIP_PERCENTILE as f32 / 100.0;
        assert!((range.clip - expected).abs() <= 10_000.0 / HISTOGRAM_BINS as f32 + 1.0, "{}", range.clip);
        assert!((range.channel_means[0] - 5_000.5).abs() < 1e-2);
        assert!(range.quantization().unsigned);
    }
}
