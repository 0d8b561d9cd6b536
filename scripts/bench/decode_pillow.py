"""Pillow's JPEG decode + resize on one core, as the reference pipeline loads photos
(`openvino_pipeline.py`): open, `draft` (libjpeg-turbo's reduced DCT scale, down to the
requested size), RGB, bilinear resize. Usage: decode_pillow.py DIR [size=224]; prints
images_per_second=N."""
import io
import pathlib
import sys
import time

from PIL import Image

folder = pathlib.Path(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
data = [p.read_bytes() for p in files]

start = time.perf_counter()
for blob in data:
    image = Image.open(io.BytesIO(blob))
    image.draft("RGB", (size, size))
    image.convert("RGB").resize((size, size), Image.BILINEAR)
elapsed = time.perf_counter() - start
print(f"images_per_second={len(data) / elapsed:.1f}")
