//! ONNX export, in Rust: the inference model (BatchNorm folded, fp32) written as an ONNX
//! graph, opset 17, dynamic batch. Input `images` `[batch, 3, S, S]` normalised as in
//! training (S from the model file), output `logits` `[batch, classes]`; the class names,
//! image size, normalisation and architecture in the model's metadata. Serving engines
//! (onnxruntime, OpenVINO) load it as they are.
//!
//! The ONNX messages are generated at build time from the ONNX project's own
//! `proto/onnx.proto3` by `prost-build`, with `protox` (a pure-Rust protobuf compiler)
//! in place of `protoc`, so nothing outside crates.io is needed to build.

use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;
use tch::{Kind, Tensor};

use super::fused::{FusedBlock, FusedClassifier, FusedConv, FusedHead, FusedLayer, PointwiseConv};
use super::layers::{Activation, Gate};
use super::quantize::{quantize_weights, ActivationQuantization, ActivationRanges, QuantizedWeights, WeightRange};
use super::{ImageTypeClassifier, LAYER_NORM_EPS};
use imgtype_images::image::{IMAGENET_MEAN, IMAGENET_STD};

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{dimension, Dimension};
use proto::type_proto;

/// Operator set 17: the first with `LayerNormalization`; every runtime of the last years has it.
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;

/// The model as ONNX bytes.
pub fn to_onnx(model: &ImageTypeClassifier) -> Vec<u8> {
    build(model, &FusedClassifier::new(model, Kind::Float), None)
}

/// The model as ONNX bytes in QDQ form for INT8 runtimes: before each backbone convolution
/// its input quantised and dequantised with `ranges`, its weights stored as INT8 per output
/// channel behind a `DequantizeLinear`, its bias corrected (`quantize`). OpenVINO turns each
/// such pattern into an INT8 convolution; everything else runs as in [`to_onnx`]. The
/// weights use `weights` (the CPU's INT8 kernels decide which is safe).
pub fn to_onnx_int8(model: &ImageTypeClassifier, ranges: &ActivationRanges, weights: WeightRange) -> Result<Vec<u8>> {
    let fused = FusedClassifier::new(model, Kind::Float);
    ranges.check_fits(&fused.convolutions())?;
    Ok(build(model, &fused, Some((ranges, weights))))
}

fn build(
    model: &ImageTypeClassifier,
    fused: &FusedClassifier,
    int8: Option<(&ActivationRanges, WeightRange)>,
) -> Vec<u8> {
    let mut graph = GraphBuilder { int8, ..Default::default() };
    let mut xs = "images".to_string();
    for block in fused.blocks() {
        xs = graph.block(block, &xs);
    }
    let pooled = graph.node("GlobalAveragePool", vec![xs], vec![]);
    let features = graph.node("Flatten", vec![pooled], vec![int("axis", 1)]);
    let logits = graph.head(fused.head(), &features);
    let size = model.input_size() as i64;
    let classes = model.class_names().len() as i64;
    let graph = proto::GraphProto {
        name: "imgtype".into(),
        node: graph.nodes,
        initializer: graph.initializers,
        input: vec![value_info("images", vec![symbolic("batch"), fixed(3), fixed(size), fixed(size)])],
        output: vec![value_info(&logits, vec![symbolic("batch"), fixed(classes)])],
        ..Default::default()
    };
    let model_proto = proto::ModelProto {
        ir_version: IR_VERSION,
        producer_name: "imgtype".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![proto::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        metadata_props: metadata(model, int8),
        graph: Some(graph),
        ..Default::default()
    };
    model_proto.encode_to_vec()
}

/// Writes the model as ONNX to `path` (atomically).
pub fn export_onnx(model: &ImageTypeClassifier, path: &Path) -> Result<()> {
    imgtype_base::fsutil::write_atomic(path, &to_onnx(model))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Loads the model file at `model_path` (on the CPU) and writes it as ONNX to `output`, in
/// QDQ form with `int8` (refused for a file without INT8 ranges). Its weights are 7-bit:
/// the file may run on any CPU, and on one without VNNI 8-bit weights can overflow.
pub fn export_model_file(model_path: &Path, output: &Path, int8: bool) -> Result<()> {
    let model = ImageTypeClassifier::load(model_path, tch::Device::Cpu)?;
    let bytes = match int8.then(|| model.int8_ranges()) {
        None => to_onnx(&model),
        Some(Some(ranges)) => to_onnx_int8(&model, ranges, WeightRange::Reduced)?,
        Some(None) => {
            let reason = model.int8_missing_reason();
            anyhow::bail!("{}: no QDQ export: {reason} (`test --int8-calibrate` measures them)", model_path.display());
        }
    };
    imgtype_base::fsutil::write_atomic(output, &bytes).with_context(|| format!("cannot write {}", output.display()))
}

fn metadata(
    model: &ImageTypeClassifier,
    int8: Option<(&ActivationRanges, WeightRange)>,
) -> Vec<proto::StringStringEntryProto> {
    let json = |values: &[f64]| serde_json::to_string(values).expect("numbers serialise");
    let quantization = match int8 {
        Some((ranges, weights)) => {
            let bits = weights.bits();
            format!("int8 QDQ, activation ranges from {} images, {bits}-bit weights", ranges.images)
        }
        None => "none (fp32)".into(),
    };
    [
        ("quantization", quantization),
        ("class_names", serde_json::to_string(model.class_names()).expect("names serialise")),
        ("image_size", model.input_size().to_string()),
        ("normalize_mean", json(&IMAGENET_MEAN)),
        ("normalize_std", json(&IMAGENET_STD)),
        ("architecture", model.config().model.backbone.as_str().to_string()),
        // `test` and the API divide the logits by it before the softmax.
        ("temperature", model.config().inference.temperature.to_string()),
        ("imgtype_version", env!("CARGO_PKG_VERSION").to_string()),
    ]
    .into_iter()
    .map(|(key, value)| proto::StringStringEntryProto { key: key.into(), value })
    .collect()
}

/// Nodes and initialisers in order, with fresh names.
#[derive(Default)]
struct GraphBuilder<'a> {
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
    names: usize,
    /// The INT8 ranges of the backbone's convolutions, for the QDQ form.
    int8: Option<(&'a ActivationRanges, WeightRange)>,
    /// Backbone convolutions written so far: the index into `int8`'s ranges.
    convolutions: usize,
}

impl GraphBuilder<'_> {
    fn fresh(&mut self, stem: &str) -> String {
        self.names += 1;
        format!("{stem}_{}", self.names)
    }

    /// A node with one output; returns the output's name.
    fn node(&mut self, op: &str, inputs: Vec<String>, attribute: Vec<proto::AttributeProto>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.named_node(op, inputs, attribute, output)
    }

    fn named_node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attribute: Vec<proto::AttributeProto>,
        output: String,
    ) -> String {
        self.nodes.push(proto::NodeProto {
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            input: inputs,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// An fp32 initialiser holding `tensor`'s values in row-major order.
    fn weight(&mut self, stem: &str, tensor: &Tensor) -> String {
        let values = tensor.to_kind(Kind::Float).contiguous().flatten(0, -1);
        let values = Vec::<f32>::try_from(&values).expect("a CPU float tensor");
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(stem, tensor.size(), DataType::Float, bytes)
    }

    fn scalar(&mut self, stem: &str, value: f32) -> String {
        self.raw_initializer(stem, vec![], DataType::Float, value.to_le_bytes().to_vec())
    }

    fn block(&mut self, block: &FusedBlock, input: &str) -> String {
        let mut xs = input.to_string();
        for layer in block.layers() {
            xs = match layer {
                FusedLayer::Conv(conv) => self.conv(conv, &xs),
                FusedLayer::SqueezeExcitation(se) => {
                    let pooled = self.node("GlobalAveragePool", vec![xs.clone()], vec![]);
                    let squeezed = self.pointwise(&se.fc1, &pooled);
                    let squeezed = self.activation(se.activation, &squeezed);
                    let excited = self.pointwise(&se.fc2, &squeezed);
                    let gate = match se.gate {
                        Gate::Sigmoid => self.node("Sigmoid", vec![excited], vec![]),
                        // torch's hardsigmoid: relu6(x + 3) / 6.
                        Gate::Hardsigmoid => {
                            self.node("HardSigmoid", vec![excited], vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)])
                        }
                    };
                    self.node("Mul", vec![xs, gate], vec![])
                }
            };
        }
        if block.residual() {
            xs = self.node("Add", vec![xs, input.to_string()], vec![]);
        }
        xs
    }

    fn conv(&mut self, conv: &FusedConv, input: &str) -> String {
        let kernel = conv.weight.size()[2];
        let range = self.int8.map(|(ranges, weights)| (&ranges.convolutions[self.convolutions], weights));
        self.convolutions += 1;
        let (input, weight, bias) = match range {
            None => (input.to_string(), self.weight("conv_weight", &conv.weight), self.weight("conv_bias", &conv.bias)),
            Some((range, weights)) => {
                let quantized = quantize_weights(conv, range, weights);
                let input = self.quantize_dequantize(input, range.quantization());
                let weight = self.int8_weight(&quantized, &conv.weight.size());
                (input, weight, self.weight("conv_bias", &quantized.bias))
            }
        };
        let (s, p) = (conv.stride, conv.padding);
        let attributes = vec![
            ints("kernel_shape", &[kernel, kernel]),
            ints("strides", &[s, s]),
            ints("pads", &[p, p, p, p]),
            ints("dilations", &[1, 1]),
            int("group", conv.groups),
        ];
        let ys = self.node("Conv", vec![input, weight, bias], attributes);
        self.activation(conv.activation, &ys)
    }

    /// `DequantizeLinear(QuantizeLinear(x))` with zero point 0, in `u8` or `i8`.
    fn quantize_dequantize(&mut self, input: &str, quantization: ActivationQuantization) -> String {
        let scale = self.scalar("act_scale", quantization.scale);
        let data_type = if quantization.unsigned { DataType::Uint8 } else { DataType::Int8 };
        let zero_point = self.raw_initializer("act_zero_point", vec![], data_type, vec![0]);
        let quantized = self.node("QuantizeLinear", vec![input.to_string(), scale.clone(), zero_point.clone()], vec![]);
        self.node("DequantizeLinear", vec![quantized, scale, zero_point], vec![])
    }

    /// INT8 weights and their per-output-channel scales behind a `DequantizeLinear`.
    fn int8_weight(&mut self, quantized: &QuantizedWeights, dims: &[i64]) -> String {
        let bytes = quantized.values.iter().map(|&v| v as u8).collect();
        let values = self.raw_initializer("conv_weight_int8", dims.to_vec(), DataType::Int8, bytes);
        let channels = quantized.scales.len();
        let scale_bytes = quantized.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let scales = self.raw_initializer("conv_weight_scale", vec![channels as i64], DataType::Float, scale_bytes);
        let zeros =
            self.raw_initializer("conv_weight_zero_point", vec![channels as i64], DataType::Int8, vec![0; channels]);
        self.node("DequantizeLinear", vec![values, scales, zeros], vec![int("axis", 0)])
    }

    fn raw_initializer(&mut self, stem: &str, dims: Vec<i64>, data_type: DataType, raw_data: Vec<u8>) -> String {
        let name = self.fresh(stem);
        let tensor = proto::TensorProto {
            name: name.clone(),
            dims,
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        };
        self.initializers.push(tensor);
        name
    }

    fn pointwise(&mut self, conv: &PointwiseConv, input: &str) -> String {
        let weight = self.weight("se_weight", &conv.weight);
        let bias = self.weight("se_bias", &conv.bias);
        self.node("Conv", vec![input.to_string(), weight, bias], vec![ints("kernel_shape", &[1, 1])])
    }

    fn activation(&mut self, activation: Activation, xs: &str) -> String {
        let xs = xs.to_string();
        match activation {
            Activation::Identity => xs,
            Activation::Relu => self.node("Relu", vec![xs], vec![]),
            Activation::Silu => {
                let gate = self.node("Sigmoid", vec![xs.clone()], vec![]);
                self.node("Mul", vec![xs, gate], vec![])
            }
            Activation::Relu6 => {
                let (low, high) = (self.scalar("zero", 0.0), self.scalar("six", 6.0));
                self.node("Clip", vec![xs, low, high], vec![])
            }
            Activation::Hardswish => self.node("HardSwish", vec![xs], vec![]),
        }
    }

    /// `Linear → LayerNorm → ReLU → Linear`; returns the logits' name.
    fn head(&mut self, head: &FusedHead, features: &str) -> String {
        let linear = |graph: &mut Self, xs: String, weight: &Tensor, bias: &Tensor, output: Option<&str>| {
            let (w, b) = (graph.weight("linear_weight", weight), graph.weight("linear_bias", bias));
            let output = output.map(String::from).unwrap_or_else(|| graph.fresh("gemm"));
            graph.named_node("Gemm", vec![xs, w, b], vec![int("transB", 1)], output)
        };
        let hidden = linear(self, features.to_string(), &head.hidden_weight, &head.hidden_bias, None);
        let (scale, shift) = (self.weight("norm_weight", &head.norm_weight), self.weight("norm_bias", &head.norm_bias));
        let attributes = vec![int("axis", -1), float("epsilon", LAYER_NORM_EPS as f32)];
        let normed = self.node("LayerNormalization", vec![hidden, scale, shift], attributes);
        let activated = self.node("Relu", vec![normed], vec![]);
        linear(self, activated, &head.output_weight, &head.output_bias, Some("logits"))
    }
}

fn int(name: &str, value: i64) -> proto::AttributeProto {
    proto::AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

fn ints(name: &str, values: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> proto::AttributeProto {
    proto::AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}

fn symbolic(name: &str) -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam(name.into())), ..Default::default() }
}

fn fixed(size: i64) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(size)), ..Default::default() }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> proto::ValueInfoProto {
    let tensor =
        type_proto::Tensor { elem_type: DataType::Float as i32, shape: Some(proto::TensorShapeProto { dim: dims }) };
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}
