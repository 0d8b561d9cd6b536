//! INT8, measured and written by us: the range of every convolution's input over a few
//! hundred images (end of `train`, or `test --int8-calibrate`), stored in the model file, and
//! the per-channel weights and bias correction the QDQ export (`onnx::to_onnx_int8`) carries.
//! Activations are quantised per tensor, symmetrically (`u8` where never negative, else `i8`),
//! weights per output channel. On an AMX CPU, zero points on activations made OpenVINO insert
//! a reorder before every INT8 convolution (0.61× bf16); symmetric ones ran without (0.92×).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use super::fused::{FusedClassifier, FusedConv};
use super::ImageTypeClassifier;

/// Each activation's range is clipped at this percentile of its magnitudes. Chosen on the
/// demo model (EfficientNet-B0, 64 px; INT8 as fp32 on its 376 images): min/max 18%,
/// 99.999th 57%, 99.99th 98.9%, 99.95th 99.5%, 99.9th 98.9%. Rare large activations widen
/// the range until every ordinary value's rounding noise outweighs clipping them.
pub const CLIP_PERCENTILE: f64 = 99.95;

/// Bins of the magnitude histogram the percentile is read from.
const HISTOGRAM_BINS: i64 = 8192;

/// The model file's header entry holding [`ActivationRanges`] as JSON.
pub const METADATA_KEY: &str = "int8_calibration";

/// What INT8 inference needs beyond the weights: each convolution's input range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRanges {
    /// How many images they were measured on.
    pub images: usize,
    /// SHA-256 of the weights they were measured with (every variable by name, as fp32):
    /// ranges of other weights describe another network and are dropped on loading.
    pub weights_sha256: String,
    /// One per convolution of the backbone, in the order of the forward pass (the
    /// squeeze-excitation layers, 1×1 on pooled values, stay in floating point).
    pub convolutions: Vec<ConvolutionInput>,
}

/// The values one convolution saw on its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvolutionInput {
    pub min: f32,
    pub max: f32,
    /// The magnitude INT8 represents: the [`CLIP_PERCENTILE`]th percentile of `|x|`; larger
    /// values are clipped to it.
    pub clip: f32,
    /// The mean of each input channel: the expected input, for bias correction.
    pub channel_means: Vec<f32>,
}

/// How one tensor is stored in INT8: `value ≈ scale · q`, `q` in `i8` or (never negative) `u8`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationQuantization {
    pub scale: f32,
    pub unsigned: bool,
}

impl ConvolutionInput {
    pub fn quantization(&self) -> ActivationQuantization {
        let (unsigned, reach) = (self.min >= 0.0, self.clip);
        let levels = if unsigned { 255.0 } else { 127.0 };
        // An input that was zero on every image: any positive scale represents it.
        let scale = if reach > 0.0 && reach.is_finite() { reach / levels } else { 1.0 };
        ActivationQuantization { scale, unsigned }
    }
}

/// A convolution's weights in INT8 with its corrected bias.
pub(crate) struct QuantizedWeights {
    /// `[out, in / groups, k, k]` row-major.
    pub values: Vec<i8>,
    /// One per output channel.
    pub scales: Vec<f32>,
    /// The bias minus the mean error the rounded weights add on the measured mean input
    /// (bias correction: depthwise layers, 9 weights per channel, shift without it).
    pub bias: Tensor,
}

/// Per output channel, symmetric: `scale = max |w| / 127`, `q = round(w / scale)`.
pub(crate) fn quantize_weights(conv: &FusedConv, input: &ConvolutionInput) -> QuantizedWeights {
    tch::no_grad(|| {
        let weight = conv.weight.to_kind(Kind::Float).contiguous();
        let outputs = weight.size()[0];
        let reach = weight.abs().amax([1, 2, 3], true);
        let scales = (&reach / 127.0).where_self(&reach.gt(0.0), &reach.ones_like());
        let levels = (&weight / &scales).round().clamp(-127.0, 127.0);
        let error = (&levels * &scales - &weight).sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
        let per_group = error.size()[1];
        let groups = conv.groups;
        let means = Tensor::from_slice(&input.channel_means).view([groups, 1, per_group]);
        let means = means.expand([groups, outputs / groups, per_group], false).reshape([outputs, per_group]);
        let shift = (error * means).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let bias = conv.bias.to_kind(Kind::Float) - shift;
        let values = Vec::<f32>::try_from(levels.flatten(0, -1)).expect("a CPU float tensor");
        QuantizedWeights {
            values: values.into_iter().map(|v| v as i8).collect(),
            scales: Vec::<f32>::try_from(scales.flatten(0, -1)).expect("a CPU float tensor"),
            bias,
        }
    })
}

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
    let convolutions = accumulators.into_iter().map(Accumulator::finish).collect();
    Ok(ActivationRanges { images, weights_sha256: weights_sha256(model), convolutions })
}

/// SHA-256 over every variable's name and fp32 values, in name order.
pub fn weights_sha256(model: &ImageTypeClassifier) -> String {
    let mut hasher = Sha256::new();
    for (name, tensor) in model.named_tensors() {
        hasher.update(name.as_bytes());
        let values = tensor.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1);
        let values = Vec::<f32>::try_from(values).expect("a CPU float tensor");
        hasher.update(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

impl ActivationRanges {
    /// Parses the header entry; errors name what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self> {
        let ranges: Self = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("`{METADATA_KEY}` is not the INT8 ranges this tool writes: {e}"))?;
        if let Some(index) = ranges.convolutions.iter().position(|c| {
            let range = c.min.is_finite() && c.max.is_finite() && c.min <= c.max;
            let clip = c.clip.is_finite() && c.clip >= 0.0 && c.clip <= c.min.abs().max(c.max.abs());
            !(range && clip) || c.channel_means.iter().any(|m| !m.is_finite())
        }) {
            bail!(
                "`{METADATA_KEY}`: convolution {index} has a range that is not two finite numbers, low to high, \
                 with a clip between 0 and the larger magnitude"
            );
        }
        Ok(ranges)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ranges serialise")
    }

    /// Checks the ranges fit `fused`'s convolutions: one each, as many means as input channels.
    pub(crate) fn check_fits(&self, convolutions: &[&FusedConv]) -> Result<()> {
        if self.convolutions.len() != convolutions.len() {
            bail!(
                "the INT8 ranges are for {} convolutions, the model has {}",
                self.convolutions.len(),
                convolutions.len()
            );
        }
        for (index, (range, conv)) in self.convolutions.iter().zip(convolutions).enumerate() {
            let size = conv.weight.size();
            let channels = (size[1] * conv.groups) as usize;
            if range.channel_means.len() != channels {
                bail!(
                    "the INT8 ranges of convolution {index} have {} channel means, it has {channels} input channels",
                    range.channel_means.len()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgtype_base::config::{Backbone, Config};

    fn model(backbone: Backbone) -> ImageTypeClassifier {
        let mut config = Config::default();
        config.augmentation.image_size = 32;
        config.model.backbone = backbone;
        tch::manual_seed(7);
        ImageTypeClassifier::new(&config, tch::Device::Cpu)
    }

    fn measured(model: &ImageTypeClassifier) -> ActivationRanges {
        tch::manual_seed(11);
        let batches: Vec<Tensor> =
            (0..2).map(|_| Tensor::randn([4, 3, 32, 32], (Kind::Float, tch::Device::Cpu))).collect();
        measure(model, batches.len(), |i| batches[i].shallow_clone()).unwrap()
    }

    #[test]
    fn weights_round_to_within_half_a_step_with_the_full_range_used() {
        let model = model(Backbone::EfficientNetB0);
        let ranges = measured(&model);
        let fused = FusedClassifier::new(&model, Kind::Float);
        for (conv, input) in fused.convolutions().into_iter().zip(&ranges.convolutions) {
            let quantized = quantize_weights(conv, input);
            let weight = Vec::<f32>::try_from(conv.weight.contiguous().flatten(0, -1)).unwrap();
            let per_channel = weight.len() / quantized.scales.len();
            for (channel, (values, original)) in
                quantized.values.chunks(per_channel).zip(weight.chunks(per_channel)).enumerate()
            {
                let scale = quantized.scales[channel];
                assert!(values.iter().all(|&q| q != i8::MIN), "symmetric: -128 is never used");
                if original.iter().any(|&w| w != 0.0) {
                    assert_eq!(values.iter().map(|q| q.unsigned_abs()).max(), Some(127), "channel {channel}");
                }
                for (&q, &w) in values.iter().zip(original) {
                    assert!((f32::from(q) * scale - w).abs() <= scale * 0.5 + 1e-7, "{q} × {scale} vs {w}");
                }
            }
        }
    }

    /// On an input that is its measured channel means everywhere, the rounded weights with
    /// the corrected bias give the fp32 convolution's output (away from the zero padding).
    #[test]
    fn bias_correction_cancels_the_rounding_error_on_the_mean_input() {
        let model = model(Backbone::MobileNetV3Large);
        let ranges = measured(&model);
        let fused = FusedClassifier::new(&model, Kind::Float);
        let mut checked_depthwise = false;
        for (conv, input) in fused.convolutions().into_iter().zip(&ranges.convolutions) {
            let quantized = quantize_weights(conv, input);
            let size = conv.weight.size();
            let scales = Tensor::from_slice(&quantized.scales).view([-1, 1, 1, 1]);
            let values: Vec<f32> = quantized.values.iter().map(|&v| f32::from(v)).collect();
            let rounded = Tensor::from_slice(&values).view(size.as_slice()) * scales;
            let means = Tensor::from_slice(&input.channel_means).view([1, -1, 1, 1]).expand([1, -1, 9, 9], false);
            let run = |weight: &Tensor, bias: &Tensor| {
                let ys = means.conv2d(weight, Some(bias), [1], [conv.padding], [1], conv.groups);
                let pad = conv.padding;
                ys.narrow(2, pad, 9 - 2 * pad).narrow(3, pad, 9 - 2 * pad)
            };
            let exact = run(&conv.weight.contiguous(), &conv.bias);
            let corrected = run(&rounded, &quantized.bias);
            let uncorrected = run(&rounded, &conv.bias);
            let error = |ys: &Tensor| (ys - &exact).abs().max().double_value(&[]);
            let reach = exact.abs().max().double_value(&[]).max(1.0);
            assert!(error(&corrected) <= 1e-4 * reach, "corrected: {} of {reach}", error(&corrected));
            if conv.groups > 1 && error(&uncorrected) > 10.0 * error(&corrected).max(1e-7) {
                checked_depthwise = true;
            }
        }
        assert!(checked_depthwise, "some depthwise layer had a rounding error to correct");
    }

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

    #[test]
    fn ranges_follow_the_weights_they_were_measured_on() {
        let mut model = model(Backbone::EfficientNetB0);
        let ranges = measured(&model);
        assert_eq!(ranges.convolutions.len(), 49, "EfficientNet-B0 has 49 convolutions outside its SE layers");
        model.set_int8_ranges(ranges.clone()).unwrap();
        assert_eq!(model.int8_ranges(), Some(&ranges));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let loaded = ImageTypeClassifier::load(&path, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.int8_ranges(), Some(&ranges), "saved and loaded with the model");
        tch::no_grad(|| {
            let (_, mut weight) = model.named_tensors().into_iter().find(|(n, _)| n.ends_with("0.0.weight")).unwrap();
            let _ = weight.g_add_scalar_(0.01);
        });
        assert_eq!(model.int8_ranges(), None, "stale ranges are not used");
        let error = model.set_int8_ranges(ranges).unwrap_err().to_string();
        assert!(error.contains("other weights"), "{error}");
    }

    #[test]
    fn stored_ranges_that_make_no_sense_are_refused() {
        let model = model(Backbone::MobileNetV3Small);
        let ranges = measured(&model);
        assert_eq!(ActivationRanges::from_json(&ranges.to_json()).unwrap(), ranges);
        let mut json: serde_json::Value = serde_json::from_str(&ranges.to_json()).unwrap();
        json["convolutions"][3]["clip"] = serde_json::json!(1e30);
        let error = ActivationRanges::from_json(&json.to_string()).unwrap_err().to_string();
        assert!(error.contains("convolution 3"), "{error}");
        assert!(ActivationRanges::from_json("{\"images\": 3}").unwrap_err().to_string().contains(METADATA_KEY));
        let mut fewer = ranges.clone();
        fewer.convolutions.pop();
        let mut model = model;
        let error = model.set_int8_ranges(fewer).unwrap_err().to_string();
        assert!(error.contains("convolutions"), "{error}");
    }
}
