"""scripts/gpu_check.sh's bookkeeping: one JSON line per measurement, then the JSON file and
Markdown table of the whole check.

  report.py sample LABEL JSON_LINE SAMPLES_CSV   a benchmark's line with the GPU's mean use and
                                                 peak memory over its run (nvidia-smi samples)
  report.py decode LOG CORES                     bench_decode's rate per core, times the cores
  report.py train RUN_WORK SAMPLES_CSV           a real `train` run's images/s and GPU use
  report.py write OUT GPU BUILD SECONDS DEVICE   OUT/gpu_check.json and OUT/gpu_check.md"""
import json
import re
import sys
from pathlib import Path


def gpu_samples(path):
    """Mean utilisation (%) and peak memory (MiB, above the idle GPU's) from nvidia-smi CSV."""
    try:
        rows = [[float(v) for v in line.split(",")] for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    if not rows:
        return {}
    idle_file = Path(path).parent / "idle_memory"
    idle = float(idle_file.read_text().strip() or 0) if idle_file.exists() else 0.0
    busy = [u for u, _ in rows]
    return {"gpu_utilisation_mean_pct": round(sum(busy) / len(busy), 1),
            "gpu_memory_peak_mib": round(max(m for _, m in rows) - idle)}


def sample(label, line, samples):
    try:
        result = json.loads(line)
        result.update(gpu_samples(samples))
    except json.JSONDecodeError:
        result = {"name": label, "error": f"no result (see bench_{label}.log)"}
    print(json.dumps(result))


def decode(log, cores):
    text = Path(log).read_text()
    m = re.search(r"reduced-scale decode\+resize ([0-9.]+) images/s", text)
    if not m:
        print(json.dumps({"name": "pipeline_decode", "error": "no result (see bench_pipeline_decode.log)"}))
        return
    per_core = float(m.group(1))
    print(json.dumps({"name": "pipeline_decode", "images_per_second_per_core": per_core,
                      "cores": int(cores), "images_per_second": round(per_core * int(cores), 1)}))


def train(work, samples):
    work = Path(work)
    runs = sorted((work / "results").glob("run_*/logs/metrics.csv"))
    if not runs:
        print(json.dumps({"name": "pipeline_train", "error": "no run (see bench_pipeline_train.log)"}))
        return
    lines = runs[-1].read_text().splitlines()
    header = lines[0].split(",")
    last = dict(zip(header, lines[-1].split(",")))
    if len(lines) < 2:
        print(json.dumps({"name": "pipeline_train", "error": "no epoch finished (see bench_pipeline_train.log)"}))
        return
    result = {"name": "pipeline_train", "epochs": len(lines) - 1,
              "images_per_second": round(float(last["images_per_second"]), 1)}
    result.update(gpu_samples(samples))
    print(json.dumps(result))


def write(out, gpu, build, seconds, device):
    out = Path(out)
    tests = [json.loads(line) for line in (out / "tests.jsonl").read_text().splitlines() if line.strip()]
    bench = {}
    for line in (out / "bench.jsonl").read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            bench[entry["name"]] = entry
    passed = bool(tests) and all(t["outcome"] in ("ok", "skipped (no CUDA device)") for t in tests)
    summary = {"gpu": gpu, "device": device, "build": build, "seconds": int(seconds),
               "outcome": "passed" if passed else "failed", "tests": tests, "measurements": bench}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")

    def rate(name):
        return bench.get(name, {}).get("images_per_second")

    def cell(name, key="images_per_second"):
        value = bench.get(name, {}).get(key)
        if value is None:
            return bench.get(name, {}).get("skipped") or bench.get(name, {}).get("error") or "—"
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    def ratio(a, b):
        return f"{rate(a) / rate(b):.2f}×" if rate(a) and rate(b) else "—"

    md = [f"# GPU check: {gpu}", "",
          f"Device `{device}`, {build}; {len(tests)} tests: {sum(t['outcome'] == 'ok' for t in tests)} passed, "
          f"{sum(t['outcome'].startswith('skipped') for t in tests)} skipped, "
          f"{sum(not (t['outcome'] == 'ok' or t['outcome'].startswith('skipped')) for t in tests)} failed; "
          f"{seconds} s of checks.", "", "## Tests", "", "| test | outcome | seconds |", "| --- | --- | --- |"]
    md += [f"| {t['test']} | {t['outcome']} | {t['seconds']} |" for t in tests]
    md += ["", "## Training step and forward pass (images/s; GPU use %, peak MiB)", "",
           "| measurement | ours | PyTorch eager | torch.compile | ours / eager | ours / compile | GPU use ours / eager / compile | peak MiB ours / eager / compile |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in ["train_fp32", "train_bf16", "forward_fp32", "forward_bf16"]:
        names = [f"rust_{m}", f"torch_eager_{m}", f"torch_compile_{m}"]
        use = " / ".join(cell(n, "gpu_utilisation_mean_pct") for n in names)
        memory = " / ".join(cell(n, "gpu_memory_peak_mib") for n in names)
        md.append(f"| {m} | {cell(names[0])} | {cell(names[1])} | {cell(names[2])} | {ratio(names[0], names[1])} | "
                  f"{ratio(names[0], names[2])} | {use} | {memory} |")
    decode_rate, train_rate, step_rate = rate("pipeline_decode"), rate("pipeline_train"), rate("rust_train_bf16")
    md += ["", "## Data pipeline", "",
           "| measurement | images/s | note |", "| --- | --- | --- |",
           f"| decode + resize on the host (bench_decode) | {cell('pipeline_decode')} | "
           f"{cell('pipeline_decode', 'images_per_second_per_core')} per core × {cell('pipeline_decode', 'cores')} cores |",
           f"| `train`, mixed precision, last epoch | {cell('pipeline_train')} | GPU use (%) {cell('pipeline_train', 'gpu_utilisation_mean_pct')}, "
           f"peak (MiB) {cell('pipeline_train', 'gpu_memory_peak_mib')} |",
           f"| training step alone, bf16 (bench_gpu) | {cell('rust_train_bf16')} | what the GPU consumes |"]
    if train_rate and step_rate:
        bound = "decoding on the host" if decode_rate and decode_rate < step_rate else "the step or the copy"
        md += ["", f"`train` runs at {train_rate / step_rate:.0%} of the GPU's training-step rate; "
                   f"the host decodes {decode_rate or 0:,.0f} images/s against the GPU's {step_rate:,.0f}: "
                   f"bounded by {bound}."]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    sys.exit(0 if passed else 1)


command, args = sys.argv[1], sys.argv[2:]
{"sample": sample, "decode": decode, "train": train, "write": write}[command](*args)
