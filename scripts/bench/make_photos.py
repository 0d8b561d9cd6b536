"""Photos the size of marketplace uploads for the benchmarks: the bundled sample images
scaled up to SIZE px (long side), with fine noise so the JPEGs carry as much detail as
camera photos (a few hundred KB at 1600 px), and a CSV listing them.

usage: .venv/bin/python scripts/bench/make_photos.py OUT_DIR SIZE COUNT
writes OUT_DIR/images/*.jpg and OUT_DIR/images.csv (image_path,image_type, paths absolute)
"""
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
out, size, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(out / "images").mkdir(parents=True, exist_ok=True)
rows = list(csv.DictReader(open(ROOT / "data" / "train_data.csv"))) if (ROOT / "data" / "train_data.csv").exists() else []
if not rows:
    rows = [{"image_path": str(p.relative_to(ROOT / "sample_images")), "image_type": "full_shot"}
            for p in sorted((ROOT / "sample_images").rglob("*.jpg"))]
rng = np.random.default_rng(0)
with open(out / "images.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image_path", "image_type"])
    for i in range(count):
        row = rows[i % len(rows)]
        src = Image.open(ROOT / "sample_images" / row["image_path"]).convert("RGB")
        w, h = (size, size * 3 // 4) if i % 2 else (size * 3 // 4, size)
        img = np.asarray(src.resize((w, h), Image.BICUBIC), dtype=np.float32)
        img += rng.normal(0, 6, img.shape)
        path = out / "images" / f"photo_{size}_{i:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        writer.writerow([str(path), row["image_type"]])
