"""Runs an exported ONNX model with onnxruntime on REFERENCE's `input` (the whole batch and a
batch of one, for the dynamic batch dimension) and compares with REFERENCE's `logits`.

usage: check_onnx.py MODEL.onnx REFERENCE.safetensors"""
import json
import sys

import onnx
import onnxruntime
from safetensors.numpy import load_file

model_path, reference_path = sys.argv[1], sys.argv[2]
reference = load_file(reference_path)
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
assert [i.name for i in session.get_inputs()] == ["images"]
for batch in (reference["input"], reference["input"][:1]):
    (logits,) = session.run(["logits"], {"images": batch})
    diff = abs(logits - reference["logits"][: len(batch)]).max()
    print(f"batch {len(batch)}: max |logit diff| = {diff:.3e}")
    assert diff <= 1e-4, diff
meta = {p.key: p.value for p in onnx.load(model_path).metadata_props}
assert json.loads(meta["class_names"]) == ["care_label", "detail_shot", "full_shot"], meta
