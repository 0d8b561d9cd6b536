"""OpenVINO from Python on an ONNX model, as a serving team would run our export: the
reference for our OpenVINO engine's forward pass (same model, same machine).

usage: openvino_forward.py MODEL.onnx SIZE BATCH ITERS f32|bf16
Prints one line `python images_per_second=<x>`."""
import sys
import time

import numpy as np
import openvino

path, size, batch, iters, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
compiled = openvino.Core().compile_model(
    path, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
)
request = compiled.create_infer_request()
images = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
request.infer({0: images})  # warm-up
started = time.perf_counter()
for _ in range(iters):
    request.infer({0: images})
rate = batch * iters / (time.perf_counter() - started)
print(f"python images_per_second={rate:.2f} (openvino {precision}, size {size}, batch {batch}, {iters} iterations)")
