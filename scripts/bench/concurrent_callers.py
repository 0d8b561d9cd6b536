"""8 backend threads each predicting one image at a time through the Python module, against
one call with all the images: the API merges concurrent calls into shared forward passes.

usage: concurrent_callers.py MODEL IMAGE_DIR [CALLS_PER_THREAD=25]
Prints the throughput of both, their ratio, and the callers' p50/p95 latency."""
import statistics
import sys
import threading
import time
from pathlib import Path

import imgtype

model, image_dir = sys.argv[1], Path(sys.argv[2])
calls = int(sys.argv[3]) if len(sys.argv) > 3 else 25
images = sorted(str(p.resolve()) for p in image_dir.rglob("*.jpg"))[: 8 * calls]
assert all(r["predicted_class"] != "ERROR" for r in imgtype.ImageClassificationAPI(model, allow_absolute_paths=True).predict(images[:4]))
api = imgtype.ImageClassificationAPI(model, allow_absolute_paths=True)


def caller(mine, latencies, lock):
    for key in mine:
        t = time.perf_counter()
        api.predict([key])
        with lock:
            latencies.append((time.perf_counter() - t) * 1000)


def eight_callers(keys):
    """Images per second of 8 threads predicting `keys` one at a time, and their latencies."""
    latencies, lock = [], threading.Lock()
    threads = [threading.Thread(target=caller, args=(keys[i::8], latencies, lock)) for i in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(keys) / (time.perf_counter() - started), latencies


# Warm-up, as a server is warm: OpenVINO prepares its kernels for each batch size the first
# time it sees it (about 12 ms at 64 px), and concurrent calls make passes of every size.
api.predict(images)
for _ in range(3):
    eight_callers(images)

started = time.perf_counter()
api.predict(images)
one_call = len(images) / (time.perf_counter() - started)
concurrent, latencies = eight_callers(images)
latencies.sort()
p95 = latencies[int(0.95 * (len(latencies) - 1))]
print(f"one call of {len(images)} images: {one_call:.1f} images/s")
print(f"8 threads x single-image calls: {concurrent:.1f} images/s ({concurrent / one_call:.2f}x), "
      f"latency p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms")
