"""The Python module on a CUDA device, as a GPU backend uses it: `device="cuda"` gives the
predictions of `device="cpu"` (the model file says `precision: fp32`, so probabilities agree
within 1e-3), also from 4 threads at once. Without a CUDA device it says so and exits 0; with
IMGTYPE_REQUIRE_CUDA=1 (scripts/gpu_check.sh) that is a failure instead.

usage: python tests/python/test_imgtype_cuda.py
(IMGTYPE_BIN_DIR: the folder of the divide and train binaries; default target/release)"""
import csv
import os
import sys
import tempfile
import threading
from pathlib import Path

import imgtype

from tiny_model import root, train_tiny_model

binaries = Path(os.environ.get("IMGTYPE_BIN_DIR", root / "target" / "release"))


with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    model = str(train_tiny_model(work, binaries, {"num_workers": 2, "device": "cpu", "precision": "fp32"}))
    keys = [row["image_path"] for row in csv.DictReader(open(work / "data" / "test_data.csv"))][:24]

    try:
        on_cuda = imgtype.ImageClassificationAPI(model, device="cuda")
    except RuntimeError as error:
        if "CUDA device" not in str(error):
            raise
        if os.environ.get("IMGTYPE_REQUIRE_CUDA") == "1":
            sys.exit(f"IMGTYPE_REQUIRE_CUDA=1 but: {error}")
        print(f"test_imgtype_cuda: skipped, no CUDA device ({error})")
        sys.exit(0)
    on_cpu = imgtype.ImageClassificationAPI(model, device="cpu")
    expected = on_cpu.predict(keys, probabilities=True)
    got = on_cuda.predict(keys, probabilities=True)
    assert len(got) == len(keys) and all(r["predicted_class"] != "ERROR" for r in got), got
    worst = 0.0
    for row, want in zip(got, expected):
        assert row["predicted_class"] == want["predicted_class"], (row, want)
        for name, p in want["probabilities"].items():
            worst = max(worst, abs(row["probabilities"][name] - p))
    assert worst <= 1e-3, worst

    results = {}

    def worker(t):
        results[t] = [on_cuda.predict(keys[i:i + 5]) for i in range(0, len(keys), 5)]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sequential = [on_cuda.predict(keys[i:i + 5]) for i in range(0, len(keys), 5)]
    for t in range(4):
        assert [[r["predicted_class"] for r in b] for b in results[t]] == \
            [[r["predicted_class"] for r in b] for b in sequential], t
    print(f"test_imgtype_cuda: {len(keys)} images, device=\"cuda\" decides as \"cpu\", "
          f"max |probability difference| {worst:.2e}; 4 threads agree")
