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

mod measure;

pub use measure::{measure, CLIP_PERCENTILE};

use super::fused::FusedConv;
use super::ImageTypeClassifier;

/// Why ranges whose seal does not match their model are not used.
pub const NOT_SEALED: &str =
    "they were measured on other weights or another input size, or edited since (their SHA-256 does not match)";

/// The model file's header entry holding [`ActivationRanges`] as JSON.
pub const METADATA_KEY: &str = "int8_calibration";

/// What INT8 inference needs beyond the weights: each convolution's input range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRanges {
    /// How many images they were measured on.
    pub images: usize,
    /// SHA-256 over the weights they were measured with (every variable by name, as fp32),
    /// the input size and the ranges themselves: ranges of other weights or another input
    /// size describe another network, and edited ranges are not ours; both are ignored.
    pub sha256: String,
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
    fn is_consistent(&self) -> bool {
        let reach = self.min.abs().max(self.max.abs());
        let range = self.min.is_finite() && self.max.is_finite() && self.min <= self.max;
        let clip = self.clip.is_finite() && self.clip <= reach && (self.clip > 0.0 || reach == 0.0);
        range && clip && self.channel_means.iter().all(|m| m.is_finite() && m.abs() <= reach)
    }

    pub fn quantization(&self) -> ActivationQuantization {
        let (unsigned, reach) = (self.min >= 0.0, self.clip);
        let levels = if unsigned { 255.0 } else { 127.0 };
        // An input that was (nearly) zero on every image: any positive scale represents it.
        let scale = if reach > 1e-20 && reach.is_finite() { reach / levels } else { 1.0 };
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

/// How many steps either side of zero INT8 weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightRange {
    /// ±127, for CPUs whose INT8 dot products add in 32 bits (VNNI: AVX-512 VNNI, AVX-VNNI,
    /// AMX; Arm's `sdot`).
    Full,
    /// ±63 (7 bits): an x86 CPU without VNNI multiplies `u8` activations by `i8` weights with
    /// `vpmaddubsw`, which adds each pair of products in a saturating 16-bit lane;
    /// 2 · 255 · 127 can overflow it, 2 · 255 · 63 cannot (ONNX Runtime's `reduce_range`, NNCF's
    /// overflow fix). Our `i8` activations are affected too: without AMX or AVX-VNNI, OpenVINO
    /// runs them as `u8` with a zero point of 128. Depthwise convolutions widen to 16 bits
    /// first and would not need it (not measured apart). With ±127 on an AVX2-only AMD EPYC, a
    /// MobileNetV3 decided as fp32 for 350 of 376 images; with ±63, 374.
    Reduced,
}

impl WeightRange {
    /// What this CPU's INT8 kernels add without overflowing.
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let vnni =
                std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni");
            if !vnni {
                return Self::Reduced;
            }
        }
        Self::Full
    }

    /// The largest magnitude a weight takes: 127 or 63.
    fn levels(self) -> f64 {
        f64::from((1u32 << (self.bits() - 1)) - 1)
    }

    /// The signed bits the weights take: 8 for ±127, 7 for ±63.
    pub fn bits(self) -> u32 {
        match self {
            Self::Full => 8,
            Self::Reduced => 7,
        }
    }
}

/// Per output channel, symmetric: `scale = max |w| / L`, `q = round(w / scale)`, `L` from `range`.
pub(crate) fn quantize_weights(conv: &FusedConv, input: &ConvolutionInput, range: WeightRange) -> QuantizedWeights {
    tch::no_grad(|| {
        let weight = conv.weight.to_kind(Kind::Float).contiguous();
        let outputs = weight.size()[0];
        let reach = weight.abs().amax([1, 2, 3], true);
        let top = range.levels();
        let scales = (&reach / top).where_self(&reach.gt(0.0), &reach.ones_like());
        let levels = (&weight / &scales).round().clamp(-top, top);
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

/// SHA-256 over every variable's name and fp32 values in name order, the input size, and
/// the ranges (their JSON, which reads back to the same numbers).
pub(crate) fn seal(model: &ImageTypeClassifier, images: usize, convolutions: &[ConvolutionInput]) -> String {
    let mut hasher = Sha256::new();
    for (name, tensor) in model.named_tensors() {
        hasher.update(name.as_bytes());
        let values = tensor.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1);
        let values = Vec::<f32>::try_from(values).expect("a CPU float tensor");
        hasher.update(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    hasher.update(model.input_size().to_le_bytes());
    hasher.update(serde_json::to_string(&(images, convolutions)).expect("ranges serialise"));
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

impl ActivationRanges {
    /// Parses the header entry; errors name what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self> {
        let ranges: Self = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("`{METADATA_KEY}` is not the INT8 ranges this tool writes: {e}"))?;
        if ranges.images == 0 {
            bail!("`{METADATA_KEY}` says it was measured on no images");
        }
        if let Some(index) = ranges.convolutions.iter().position(|c| !c.is_consistent()) {
            bail!(
                "`{METADATA_KEY}`: convolution {index}'s range is not two finite numbers, low to high, with a \
                 clip above 0 (unless both are 0) and within them, and channel means within them"
            );
        }
        Ok(ranges)
    }

    /// Whether these ranges were measured by us on `model`'s weights and input size.
    pub fn is_sealed_for(&self, model: &ImageTypeClassifier) -> bool {
        self.sha256 == seal(model, self.images, &self.convolutions)
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
pub(crate) mod tests {
    use super::*;
    use crate::fused::FusedClassifier;
    use imgtype_base::config::{Backbone, Config};

    pub(crate) fn model(backbone: Backbone) -> ImageTypeClassifier {
        let mut config = Config::default();
        config.augmentation.image_size = 32;
        config.model.backbone = backbone;
        tch::manual_seed(7);
        ImageTypeClassifier::new(&config, tch::Device::Cpu)
    }

    pub(crate) fn measured(model: &ImageTypeClassifier) -> ActivationRanges {
        tch::manual_seed(11);
        let batches: Vec<Tensor> =
            (0..2).map(|_| Tensor::randn([4, 3, 32, 32], (Kind::Float, tch::Device::Cpu))).collect();
        measure(model, batches.len(), |i| batches[i].shallow_clone()).unwrap()
    }

    /// The range follows the CPU's VNNI flags as the kernel reports them in /proc/cpuinfo
    /// (a second reading of the same fact than the CPUID probe `for_this_cpu` makes).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn weight_range_follows_the_kernels_vnni_flags() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).expect("a flags line in /proc/cpuinfo");
        let vnni = flags.split_whitespace().any(|f| f == "avx512_vnni" || f == "avx_vnni");
        let expected = if vnni { WeightRange::Full } else { WeightRange::Reduced };
        assert_eq!(WeightRange::for_this_cpu(), expected, "{flags}");
        assert_eq!((WeightRange::Full.levels(), WeightRange::Reduced.levels()), (127.0, 63.0));
    }

    #[test]
    fn weights_round_to_within_half_a_step_with_the_full_range_used() {
        let model = model(Backbone::EfficientNetB0);
        let ranges = measured(&model);
        let fused = FusedClassifier::new(&model, Kind::Float);
        let pairs = fused.convolutions().into_iter().zip(&ranges.convolutions);
        for ((conv, input), (range, top)) in
            pairs.flat_map(|c| [(c, (WeightRange::Full, 127)), (c, (WeightRange::Reduced, 63))])
        {
            let quantized = quantize_weights(conv, input, range);
            let weight = Vec::<f32>::try_from(conv.weight.contiguous().flatten(0, -1)).unwrap();
            let per_channel = weight.len() / quantized.scales.len();
            for (channel, (values, original)) in
                quantized.values.chunks(per_channel).zip(weight.chunks(per_channel)).enumerate()
            {
                let scale = quantized.scales[channel];
                assert!(values.iter().all(|&q| q != i8::MIN), "symmetric: -128 is never used");
                if original.iter().any(|&w| w != 0.0) {
                    assert_eq!(values.iter().map(|q| q.unsigned_abs()).max(), Some(top), "channel {channel}");
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
        let pairs = fused.convolutions().into_iter().zip(&ranges.convolutions);
        for ((conv, input), range) in pairs.flat_map(|c| [(c, WeightRange::Full), (c, WeightRange::Reduced)]) {
            let quantized = quantize_weights(conv, input, range);
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
        let mut edited = ranges.clone();
        edited.convolutions[3].clip *= 0.5;
        let error = model.set_int8_ranges(edited).unwrap_err().to_string();
        assert!(error.contains("other weights"), "an edited range breaks the seal: {error}");
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
        for (key, value) in [("clip", 1e30), ("clip", 0.0), ("clip", -1.0), ("min", 1e9)] {
            let mut json: serde_json::Value = serde_json::from_str(&ranges.to_json()).unwrap();
            json["convolutions"][3][key] = serde_json::json!(value);
            let error = ActivationRanges::from_json(&json.to_string()).unwrap_err().to_string();
            assert!(error.contains("convolution 3"), "{key} {value}: {error}");
        }
        let mut json: serde_json::Value = serde_json::from_str(&ranges.to_json()).unwrap();
        json["convolutions"][2]["channel_means"][0] = serde_json::json!(3e38);
        assert!(ActivationRanges::from_json(&json.to_string()).unwrap_err().to_string().contains("convolution 2"));
        json["images"] = serde_json::json!(0);
        assert!(ActivationRanges::from_json(&json.to_string()).unwrap_err().to_string().contains("no images"));
        assert!(ActivationRanges::from_json("{\"images\": 3}").unwrap_err().to_string().contains(METADATA_KEY));
        let mut fewer = ranges.clone();
        fewer.convolutions.pop();
        fewer.sha256 = seal(&model, fewer.images, &fewer.convolutions);
        let mut model = model;
        let error = model.set_int8_ranges(fewer).unwrap_err().to_string();
        assert!(error.contains("convolutions"), "{error}");
    }
}
