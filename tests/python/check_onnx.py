"""Runs an exported ONNX model with onnxruntime and with OpenVINO (CPU, fp32 inference
precision) on REFERENCE's `input` (the whole batch and a batch of one, for the dynamic batch
dimension) and compares with REFERENCE's `logits`.

The model must pass onnx.checker (full check, with shape inference), use only the default
domain at opset >= 17, and carry CLASS_NAMES (a JSON list) in its metadata.

usage: check_onnx.py MODEL.onnx REFERENCE.safetensors [CLASS_NAMES_JSON]"""
import json
import sys

import onnx
import onnxruntime
import openvino
from safetensors.numpy import load_file

model_path, reference_path = sys.argv[1], sys.argv[2]
expected_names = json.loads(sys.argv[3]) if len(sys.argv) > 3 else ["care_label", "detail_shot", "full_shot"]
reference = load_file(reference_path)
proto = onnx.load(model_path)
onnx.checker.check_model(proto, full_check=True)
opsets = {o.domain: o.version for o in proto.opset_import}
assert set(opsets) == {""} and opsets[""] >= 17, opsets
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
assert [i.name for i in session.get_inputs()] == ["images"]
# OpenVINO runs bf16 by default on CPUs that have it: fp32 is asked for, to compare logits.
compiled = openvino.Core().compile_model(model_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
engines = {
    "onnxruntime": lambda batch: session.run(["logits"], {"images": batch})[0],
    "openvino": lambda batch: compiled(batch)[compiled.output("logits")],
}
for engine, run in engines.items():
    for batch in (reference["input"], reference["input"][:1]):
        logits = run(batch)
        diff = abs(logits - reference["logits"][: len(batch)]).max()
        print(f"{engine} batch {len(batch)}: max |logit diff| = {diff:.3e}")
        assert diff <= 1e-4, (engine, diff)
meta = {p.key: p.value for p in proto.metadata_props}
assert json.loads(meta["class_names"]) == expected_names, meta
assert int(meta["image_size"]) == reference["input"].shape[-1], meta
print("onnx.checker: ok; metadata:", meta)
