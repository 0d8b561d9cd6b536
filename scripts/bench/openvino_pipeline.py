"""The pipeline a Python team would write to serve our ONNX export with OpenVINO, as the
reference for `test --csv-path`: PIL open with `draft` (the JPEG decoder's reduced DCT
scale), convert RGB, resize to the model's size, normalise in NumPy, batches of 32 through
OpenVINO (bf16, as ours), a CSV of predictions. Timed from process start by the caller.

usage: .venv/bin/python scripts/bench/openvino_pipeline.py MODEL.onnx IMAGES.csv OUT.csv
"""
import csv
import json
import sys

import numpy as np
import onnx
import openvino
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load(path, size):
    image = Image.open(path)
    image.draft("RGB", (size, size))
    image = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD


def main():
    model_path, csv_path, out_path = sys.argv[1:4]
    metadata = {p.key: p.value for p in onnx.load(model_path, load_external_data=False).metadata_props}
    size, class_names = int(metadata["image_size"]), json.loads(metadata["class_names"])
    compiled = openvino.Core().compile_model(
        model_path, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()
    paths = [row["image_path"] for row in csv.DictReader(open(csv_path))]
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "predicted_class", "confidence"])
        for start in range(0, len(paths), 32):
            chunk = paths[start:start + 32]
            batch = np.stack([load(p, size) for p in chunk]).transpose(0, 3, 1, 2)
            logits = request.infer({0: np.ascontiguousarray(batch)})[0]
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for path, row in zip(chunk, probs):
                writer.writerow([path, class_names[int(row.argmax())], f"{row.max():.6f}"])


if __name__ == "__main__":
    main()
