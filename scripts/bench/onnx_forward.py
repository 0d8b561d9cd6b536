"""A serving runtime from Python on an ONNX model, as a serving team would run our export:
the references for our engines' forward pass (same model, same machine).

usage: onnx_forward.py MODEL.onnx SIZE BATCH ITERS openvino-bf16|openvino-f32|onnxruntime
OpenVINO gets `INFERENCE_PRECISION_HINT` and `PERFORMANCE_HINT=LATENCY`, as ours; ONNX
Runtime its defaults (fp32, all optimisations, one thread per core).
Prints one line `python images_per_second=<x>`."""
import sys
import time

import numpy as np

path, size, batch, iters, runtime = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
images = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
if runtime.startswith("openvino-"):
    import openvino

    precision = runtime.removeprefix("openvino-")
    compiled = openvino.Core().compile_model(
        path, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()
    infer = lambda: request.infer({0: images})  # noqa: E731
elif runtime == "onnxruntime":
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    infer = lambda: session.run(None, {name: images})  # noqa: E731
else:
    raise SystemExit(f"unknown runtime {runtime}: openvino-bf16, openvino-f32 or onnxruntime")
infer()  # warm-up
started = time.perf_counter()
for _ in range(iters):
    infer()
rate = batch * iters / (time.perf_counter() - started)
print(f"python images_per_second={rate:.2f} ({runtime}, size {size}, batch {batch}, {iters} iterations)")
