"""The Python module `imgtype` as a backend uses it (run by scripts/test.sh):
its predictions equal the `test` binary's CSV for the same images; bad paths give ERROR
rows; 8 threads × 50 calls give the sequential results; the GIL is released during a long
predict; URL tricks around an allow-list never reach another host; crafted model files raise
RuntimeError; and it works beside torch in one process.

usage: .venv/bin/python tests/python/test_imgtype_module.py"""
import csv
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import imgtype

from tiny_model import root, run, train_tiny_model

release = root / "target" / "release"


with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    model = train_tiny_model(work, release, {"num_workers": 2, "device": "cpu"})
    run(release / "test", "--model-path", model, "--csv-path", "data/test_data.csv", "--output-path", "preds.csv",
        cwd=work)
    expected = list(csv.DictReader(open(work / "preds.csv")))
    keys = [row["image_path"] for row in expected]

    # The same predictions as the binary, in order, with the Python system's keys.
    api = imgtype.ImageClassificationAPI(str(model), device="cpu")
    assert api.class_names == ["care_label", "detail_shot", "full_shot", "neck_label"], api.class_names
    got = api.predict(keys)
    assert [r["image_path"] for r in got] == keys
    for row, want in zip(got, expected):
        assert set(row) == {"image_path", "predicted_class", "confidence", "low_confidence"}, row
        assert row["predicted_class"] == want["predicted_class"], (row, want)
        assert abs(row["confidence"] - float(want["confidence"])) < 2e-6, (row, want)
        assert row["low_confidence"] == (want["low_confidence"] == "true"), (row, want)
    full = api.predict_one(keys[0], top_k=2, probabilities=True)
    assert len(full["top_k"]) == 2 and abs(sum(full["probabilities"].values()) - 1) < 1e-4, full

    # Bad paths: ERROR rows with the reason, in place.
    bad = api.predict([keys[0], "missing/nothing.jpg", "../image_data.csv", "/etc/passwd", keys[1]])
    assert [r["predicted_class"] == "ERROR" for r in bad] == [False, True, True, True, False], bad
    assert "`..`" in bad[2]["error"] and "absolute paths" in bad[3]["error"], bad
    assert all(r["confidence"] == 0.0 and r["low_confidence"] is False for r in bad[1:4])

    # 8 threads × 50 calls: the sequential results.
    calls = [keys[i % len(keys):][:3] + keys[:1] for i in range(50)]
    sequential = [api.predict(c) for c in calls]
    results = {}

    def worker(t):
        results[t] = [api.predict(c) for c in calls]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(8):
        for a, b in zip(results[t], sequential):
            assert [r["predicted_class"] for r in a] == [r["predicted_class"] for r in b]
            assert all(abs(x["confidence"] - y["confidence"]) < 1e-5 for x, y in zip(a, b))

    # The GIL is released: a Python thread keeps counting while a long predict runs.
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal_ticks = 0
        while not done.is_set():
            nonlocal_ticks += 1
            time.sleep(0.001)
        counter.append(nonlocal_ticks)

    counter = []
    long_call = keys * 100  # long enough to measure on a fast machine
    ticker = threading.Thread(target=count)
    ticker.start()
    started = time.perf_counter()
    api.predict(long_call)
    seconds = time.perf_counter() - started
    done.set()
    ticker.join()
    assert seconds > 0.2, f"the long call took only {seconds:.3f} s"
    assert counter[0] > 0.3 * seconds / 0.0011, f"{counter[0]} ticks in {seconds:.2f} s: the GIL was held"

    # Hostile input (issue 17). The allow-list bypass: host A allowed, B must never be asked.
    hits = {"A": 0, "B": 0}
    png = (root / "sample_images" / keys[0]).read_bytes()

    def serve(name):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits[name] += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(png)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, server.server_address[1]

    (server_a, port_a), (server_b, port_b) = serve("A"), serve("B")
    guarded = imgtype.ImageClassificationAPI(str(model), device="cpu", allowed_hosts=[f"127.0.0.1:{port_a}"],
                                             allow_private_addresses=True)
    attacks = [f"http://127.0.0.1:{port_b}\\@127.0.0.1:{port_a}/u.jpg",
               f"http://localhost:{port_b}\\@127.0.0.1:{port_a}/u.jpg",
               f"http://127.0.0.1:{port_b}\\\\@127.0.0.1:{port_a}/u.jpg",
               f"HTTP://127.0.0.1:{port_b}/u.jpg"]
    rows = guarded.predict(attacks + [f"http://127.0.0.1:{port_a}/u.jpg", f"HTTP://127.0.0.1:{port_a}/u.jpg"])
    assert [r["predicted_class"] == "ERROR" for r in rows] == [True] * 4 + [False, False], rows
    assert hits == {"A": 2, "B": 0}, hits
    server_a.shutdown()
    server_b.shutdown()
    try:
        imgtype.ImageClassificationAPI(str(model), device="cpu", allowed_hosts=["a.test/x"])
        raise AssertionError("an allowed host with a path was accepted")
    except ValueError as e:
        assert "a.test/x" in str(e), e

    # Crafted model files are an ordinary exception, never a dead interpreter.
    subprocess.run([sys.executable, str(root / "scripts" / "make_hostile_models.py"), str(work / "hostile")],
                   check=True, capture_output=True)
    crafted = sorted((work / "hostile").glob("*.pth"))
    assert len(crafted) >= 8, crafted
    for path in crafted:
        try:
            imgtype.ImageClassificationAPI(str(path), device="cpu")
            raise AssertionError(f"{path.name} loaded")
        except RuntimeError as e:
            assert path.name in str(e), e

    # Hostile input, round two (issue 26).
    # After fork (gunicorn --preload with a warm-up, multiprocessing), the child's first call
    # starts its own forward-pass thread: the parent's did not survive the fork.
    warm = api.predict(keys[:2])
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a hang fails the test instead of blocking it
        try:
            rows = api.predict(keys[:2])
            same = [r["predicted_class"] for r in rows] == [r["predicted_class"] for r in warm]
            os._exit(0 if same else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"forked child: status {status}"
    assert api.predict(keys[:1])[0]["predicted_class"] == warm[0]["predicted_class"], "the parent still predicts"

    # Forked while other threads predict: fork waits for the forward pass in flight, so the
    # child finds no lock held by a thread it does not have.
    busy = threading.Event()
    stop_spinning = threading.Event()

    def spin():
        while not stop_spinning.is_set():
            api.predict(keys)
            busy.set()

    spinners = [threading.Thread(target=spin) for _ in range(2)]
    for t in spinners:
        t.start()
    busy.wait()
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)
            try:
                rows = api.predict(keys[:2])
                os._exit(0 if [r["predicted_class"] for r in rows] == [r["predicted_class"] for r in warm] else 3)
            except BaseException:
                os._exit(4)
        children.append(pid)
        time.sleep(0.05)
    stop_spinning.set()
    for t in spinners:
        t.join()
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child forked mid-prediction: status {status}"

    # A FIFO as the model path is refused at once, never waited on.
    fifo = work / "model.fifo"
    os.mkfifo(fifo)
    try:
        imgtype.ImageClassificationAPI(str(fifo), device="cpu")
        raise AssertionError("a FIFO loaded as a model")
    except RuntimeError as e:
        assert "not a regular file" in str(e), e

    # A model whose outputs are NaN (a NaN bias, a temperature of 1e-40) is refused when loaded,
    # never a prediction with confidence NaN.
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(model), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(model))
    tensors["classifier.5.bias"][1] = float("nan")
    save_file(tensors, str(work / "nan_bias.safetensors"), metadata=metadata)
    cold = json.loads(metadata["config"])
    cold["inference"]["temperature"] = 1e-40
    save_file(load_file(str(model)), str(work / "cold.safetensors"), metadata={**metadata, "config": json.dumps(cold)})
    for name, needle in [("nan_bias.safetensors", "classifier.5.bias"), ("cold.safetensors", "inference.temperature")]:
        try:
            imgtype.ImageClassificationAPI(str(work / name), device="cpu")
            raise AssertionError(f"{name} loaded")
        except RuntimeError as e:
            assert needle in str(e), e

    # OpenVINO's C++ library named where its C library belongs: a warning, libtorch, predictions.
    cxx = sorted((root / ".venv").glob("lib/python3*/site-packages/openvino/libs/libopenvino.so.*"))[0]
    script = ("import imgtype, sys; api = imgtype.ImageClassificationAPI(sys.argv[1], device='cpu', "
              "allow_absolute_paths=True); print(api.predict([sys.argv[2]])[0]['predicted_class'])")
    mixed = subprocess.run([sys.executable, "-c", script, str(model), str(root / "sample_images" / keys[0])],
                           env={**os.environ, "IMGTYPE_OPENVINO_LIB": str(cxx)}, capture_output=True, text=True,
                           timeout=120)
    assert mixed.returncode == 0 and mixed.stdout.strip() == expected[0]["predicted_class"], mixed
    assert "not OpenVINO's C library" in mixed.stderr, mixed.stderr

    # INT8 (`system.precision: int8`): the ranges `train` stored serve it; a file without
    # them is refused naming the command that measures them.
    int8_config = json.loads(metadata["config"])
    int8_config["system"]["precision"] = "int8"
    assert "int8_calibration" in metadata, "train stores the INT8 ranges"
    save_file(load_file(str(model)), str(work / "int8.safetensors"), metadata={**metadata, "config": json.dumps(int8_config)})
    int8_rows = imgtype.ImageClassificationAPI(str(work / "int8.safetensors"), device="cpu").predict(keys)
    assert all(r["predicted_class"] in api.class_names for r in int8_rows), int8_rows[:3]
    int8_agree = sum(a["predicted_class"] == b["predicted_class"] for a, b in zip(int8_rows, got))
    without = {k: v for k, v in metadata.items() if k != "int8_calibration"}
    save_file(load_file(str(model)), str(work / "int8_none.safetensors"), metadata={**without, "config": json.dumps(int8_config)})
    try:
        imgtype.ImageClassificationAPI(str(work / "int8_none.safetensors"), device="cpu")
        raise AssertionError("INT8 without ranges loaded")
    except RuntimeError as e:
        assert "--int8-calibrate" in str(e), e

    # torch in the same process still works (one libtorch).
    assert float(torch.ones(3).sum()) == 3.0
    print(f"imgtype module: {len(keys)} predictions equal the test binary's; ERROR rows; "
          f"8 threads x 50 calls; {counter[0]} ticks during a {seconds:.2f} s predict (GIL released); "
          f"URL tricks never reached the other host; {len(crafted)} crafted model files raised RuntimeError; "
          f"forked children predict (also forked mid-prediction); a FIFO, a NaN bias and a tiny temperature are refused; a wrong OpenVINO "
          f"library falls back to libtorch; INT8 decides as fp32 for {int8_agree} of {len(keys)}, and without ranges is refused")
