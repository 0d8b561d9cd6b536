"""Deterministic generator of the bundled synthetic sample: image_data.csv and
sample_images/product/unhashed/*.jpg in the Python system's product-CSV format.

Classes look like the real photo types:
  full_shot   garment silhouette on a light background (main_image, back_image)
  detail_shot close-up fabric texture filling the frame (other)
  care_label  white label with rows of dark text-like marks (text_tag_image)
  neck_label  collar with a small brand label (neck_tag_image)

usage: .venv/bin/python scripts/make_sample_data.py [--products 84] [--seed 7]
"""
import argparse
import csv
import hashlib
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = [("top", 0.35), ("outer", 0.25), ("pants", 0.2), ("dress", 0.17), ("acc", 0.03)]


def rand_color(rng, lo=0, hi=255):
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def finish(img, rng):
    """Camera-like noise and blur, so no class is pixel-perfect."""
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, rng.uniform(2, 8), size=arr.shape)
    arr *= rng.uniform(0.85, 1.1)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def garment_polygon(category, cx, cy, s):
    if category == "pants":
        return [(cx - 0.35 * s, cy - 0.5 * s), (cx + 0.35 * s, cy - 0.5 * s), (cx + 0.45 * s, cy + 0.5 * s),
                (cx + 0.08 * s, cy + 0.5 * s), (cx, cy - 0.1 * s), (cx - 0.08 * s, cy + 0.5 * s),
                (cx - 0.45 * s, cy + 0.5 * s)]
    if category == "dress":
        return [(cx - 0.15 * s, cy - 0.5 * s), (cx + 0.15 * s, cy - 0.5 * s), (cx + 0.2 * s, cy - 0.1 * s),
                (cx + 0.45 * s, cy + 0.5 * s), (cx - 0.45 * s, cy + 0.5 * s), (cx - 0.2 * s, cy - 0.1 * s)]
    if category == "acc":
        return [(cx - 0.3 * s, cy - 0.2 * s), (cx + 0.3 * s, cy - 0.2 * s), (cx + 0.35 * s, cy + 0.35 * s),
                (cx - 0.35 * s, cy + 0.35 * s)]
    sleeve = 0.55 if category == "outer" else 0.45
    length = 0.55 if category == "outer" else 0.45
    return [(cx - 0.12 * s, cy - 0.45 * s), (cx + 0.12 * s, cy - 0.45 * s), (cx + sleeve * s, cy - 0.25 * s),
            (cx + (sleeve - 0.1) * s, cy - 0.05 * s), (cx + 0.28 * s, cy - 0.15 * s), (cx + 0.28 * s, cy + length * s),
            (cx - 0.28 * s, cy + length * s), (cx - 0.28 * s, cy - 0.15 * s), (cx - (sleeve - 0.1) * s, cy - 0.05 * s),
            (cx - sleeve * s, cy - 0.25 * s)]


def full_shot(rng, category, color):
    bg = tuple(int(v) for v in rng.integers(225, 256, size=3))
    img = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(img)
    s = rng.uniform(0.6, 0.9) * SIZE
    cx, cy = SIZE / 2 + rng.uniform(-10, 10), SIZE / 2 + rng.uniform(-8, 8)
    poly = garment_polygon(category, cx, cy, s)
    shadow = [(x + 3, y + 3) for x, y in poly]
    d.polygon(shadow, fill=tuple(max(0, c - 40) for c in bg))
    d.polygon(poly, fill=color)
    if rng.random() < 0.5:  # a print or pocket
        x0, y0 = cx - rng.uniform(5, 15), cy - rng.uniform(0, 10)
        d.rectangle([x0, y0, x0 + rng.uniform(8, 20), y0 + rng.uniform(6, 16)], fill=rand_color(rng))
    return finish(img, rng)


def detail_shot(rng, color):
    arr = np.zeros((SIZE, SIZE, 3), np.float32) + np.array(color, np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(3, 9)
    kind = rng.integers(0, 3)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    if kind == 0:  # twill / stripes
        pattern = np.sin(2 * math.pi * u / period)
    elif kind == 1:  # knit / check
        pattern = np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period)
    else:  # denim-like noise
        pattern = rng.normal(0, 1, size=(SIZE, SIZE)).astype(np.float32)
    arr += rng.uniform(15, 45) * pattern[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # a seam or a button
        if rng.random() < 0.5:
            y = rng.uniform(20, 108)
            d.line([(0, y), (SIZE, y + rng.uniform(-20, 20))], fill=tuple(max(0, c - 50) for c in color), width=2)
        else:
            x, y, r = rng.uniform(30, 98), rng.uniform(30, 98), rng.uniform(6, 12)
            d.ellipse([x - r, y - r, x + r, y + r], fill=rand_color(rng, 30, 220))
    return finish(img, rng)


def label_marks(d, x0, y0, x1, y1, rng, rows, ink):
    line_h = (y1 - y0) / (rows + 1)
    for r in range(rows):
        y = y0 + (r + 0.7) * line_h
        x = x0 + rng.uniform(3, 6)
        while x < x1 - 8:
            w = rng.uniform(2, 9)
            d.rectangle([x, y, min(x + w, x1 - 4), y + max(1.5, line_h * 0.35)], fill=ink)
            x += w + rng.uniform(1.5, 4)


def care_label(rng, color):
    img = detail_shot(rng, color).filter(ImageFilter.GaussianBlur(1.5))
    label = Image.new("RGB", (int(rng.uniform(60, 100)), int(rng.uniform(70, 110))), tuple(int(v) for v in rng.integers(235, 256, 3)))
    d = ImageDraw.Draw(label)
    ink = rand_color(rng, 0, 70)
    label_marks(d, 0, 0, label.width, label.height, rng, int(rng.integers(5, 10)), ink)
    label = label.rotate(rng.uniform(-12, 12), expand=True, fillcolor=None)
    mask = Image.new("L", label.size, 0)
    ImageDraw.Draw(mask).rectangle([0, 0, label.width, label.height], fill=255)
    mask = mask.rotate(0)
    x = int((SIZE - label.width) / 2 + rng.uniform(-10, 10))
    y = int((SIZE - label.height) / 2 + rng.uniform(-10, 10))
    img.paste(label, (x, y), Image.fromarray((np.asarray(label).sum(2) > 0).astype(np.uint8) * 255))
    return finish(img, rng)


def neck_label(rng, color):
    arr = np.zeros((SIZE, SIZE, 3), np.float32) + np.array(color, np.float32)
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)
    inside = tuple(max(0, int(c * 0.55)) for c in color)
    cx, top = SIZE / 2 + rng.uniform(-8, 8), rng.uniform(-30, -10)
    w, h = rng.uniform(70, 110), rng.uniform(70, 100)
    d.ellipse([cx - w / 2, top, cx + w / 2, top + h], fill=inside)  # inside of the collar
    d.arc([cx - w / 2 - 6, top - 6, cx + w / 2 + 6, top + h + 6], 0, 180, fill=tuple(min(255, c + 30) for c in color), width=6)
    lw, lh = rng.uniform(22, 38), rng.uniform(10, 18)
    ly = top + h - lh - rng.uniform(4, 12)
    label_color = rand_color(rng, 0, 256) if rng.random() < 0.5 else (245, 245, 240)
    d.rectangle([cx - lw / 2, ly, cx + lw / 2, ly + lh], fill=label_color)
    ink = (20, 20, 20) if sum(label_color) > 380 else (240, 240, 240)
    label_marks(d, cx - lw / 2, ly, cx + lw / 2, ly + lh, rng, 1, ink)
    return finish(img, rng)


def key_for(product_id, n):
    digest = hashlib.sha1(f"{product_id}-{n}".encode()).hexdigest()
    return f"product/unhashed/{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:28]}.jpg"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=84)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    image_root = args.out / "sample_images"
    names, weights = zip(*CATEGORIES)
    rows = []
    for i in range(args.products):
        pid = f"P{100000 + i}"
        category = "acc" if i in (5, 41) else str(rng.choice(names[:-1], p=np.array(weights[:-1]) / sum(weights[:-1])))
        color = rand_color(rng, 20, 230)
        n = 0
        cells = {"main_image": [], "back_image": [], "text_tag_image": [], "neck_tag_image": [], "other": []}

        def add(column, img):
            nonlocal n
            key = key_for(pid, n)
            n += 1
            path = image_root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, "JPEG", quality=82)
            cells[column].append(key)

        add("main_image", full_shot(rng, category, color))
        if rng.random() < 0.5:
            add("back_image", full_shot(rng, category, color))
        if rng.random() < 0.85:
            add("text_tag_image", care_label(rng, color))
        if category in ("top", "outer", "dress") and rng.random() < 0.85:
            add("neck_tag_image", neck_label(rng, color))
        for _ in range(int(rng.integers(1, 3))):
            add("other", detail_shot(rng, color))
        # The raw data mixes joiners and empty / "nan" cells.
        joiner = "&" if i % 3 else ","
        row = {"id": pid, "category_name": category}
        for column, keys in cells.items():
            row[column] = joiner.join(keys) if keys else ("nan" if i % 2 else "")
        rows.append(row)
    with open(args.out / "image_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "category_name", "main_image", "back_image", "text_tag_image", "neck_tag_image", "other"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} products to {args.out / 'image_data.csv'} and images under {image_root}")


if __name__ == "__main__":
    main()
