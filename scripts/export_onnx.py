"""Exports one of our model files to ONNX (input `images` [batch, 3, S, S], normalised as in
training; output `logits` [batch, classes]; dynamic batch), for deployment engines such as
onnxruntime or TensorRT. Class names and image size are copied into the ONNX metadata.

    .venv/bin/python scripts/export_onnx.py results/run_xxx/model/best_model.safetensors model.onnx"""
import argparse
import json

import onnx
import torch

from imgtype_torch import load_model_file

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("output")
parser.add_argument("--opset", type=int, default=18)
args = parser.parse_args()

model, metadata = load_model_file(args.model)
size = int(metadata.get("image_size", 256))
example = torch.randn(2, 3, size, size)
batch = torch.export.Dim("batch", min=1, max=4096)
torch.onnx.export(
    model,
    (example,),
    args.output,
    input_names=["images"],
    output_names=["logits"],
    dynamic_shapes={"x": {0: batch}},
    opset_version=args.opset,
    dynamo=True,
)
exported = onnx.load(args.output)
for key in ("class_names", "image_size", "normalize_mean", "normalize_std"):
    if key in metadata:
        entry = exported.metadata_props.add()
        entry.key, entry.value = key, metadata[key]
onnx.save(exported, args.output)
print(f"wrote {args.output}: classes {json.loads(metadata['class_names'])}, input [batch, 3, {size}, {size}]")
