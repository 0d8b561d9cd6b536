"""A second, independent generator of test catalogues (issue 27): drawing code, sizes,
formats, backgrounds and confusers unlike scripts/make_sample_data.py's, so that the data
audit's thresholds, chosen on that generator's catalogues, are measured on photos they were
not tuned to.

Differences from make_sample_data.py: photos of 300-800 px on each side (not 128 px squares),
rendered as NumPy arrays with lighting, shadows and sensor noise; JPEG quality 78-95, about
10% PNG and 8% greyscale; full shots on light *or* mid-tone backgrounds, partly cropped;
detail shots with logo patches that look like neck labels and garment edges that look like
full shots; care labels rotated up to 20 degrees, some small or running out of the frame;
neck labels, some of them "tagless" prints on the fabric instead of a sewn label.

Faults planted at the catalogue level (label faults are planted on the split files by
scripts/bench/planted_label_issues.py, as for the other catalogues):
- 30 near-copies (re-encoded, resized +-15%, cropped <= 5%, brightened <= 18%) and 10 exact
  copies, each filed under another product, in the same column as its source;
- OUT/planted_duplicates.csv lists each planted pair (source, copy, kind).

usage: .venv/bin/python scripts/make_catalogue_b.py --out DIR [--products 360] [--seed 5]
writes DIR/image_data.csv (the product-CSV format) and DIR/sample_images/product/b/*.{jpg,png}
"""
import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

CATEGORIES = ["top", "outer", "pants", "dress", "knit"]


def smooth_noise(rng, h, w, cells, amplitude):
    """Low-frequency noise: a coarse random grid resized up (bicubic)."""
    grid = rng.normal(0, 1, size=(max(2, cells), max(2, cells))).astype(np.float32)
    img = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    return np.asarray(img) * amplitude


def background(rng, h, w, mid_tone):
    """A studio sweep: a vertical gradient, light or mid-tone, slightly tinted."""
    base = rng.uniform(95, 150) if mid_tone else rng.uniform(205, 245)
    tint = rng.normal(0, 6, size=3)
    ramp = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(5, 25)
    bg = base + tint[None, None, :] + ramp + smooth_noise(rng, h, w, 4, 4)[:, :, None]
    return np.broadcast_to(bg, (h, w, 3)).astype(np.float32).copy()


def fabric(rng, h, w, colour):
    """A woven or knitted surface: two sine gratings at an angle, with slub noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3, 14)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    kind = rng.integers(0, 3)
    if kind == 0:
        pattern = np.sin(u * 2 * np.pi / period) * np.sin(v * 2 * np.pi / period)
    elif kind == 1:
        pattern = np.abs(np.sin(u * np.pi / period)) - 0.5
    else:
        pattern = np.sin(u * 2 * np.pi / period + 2 * np.sin(v * 2 * np.pi / (period * 3)))
    shade = pattern * rng.uniform(8, 30) + smooth_noise(rng, h, w, 8, 10)
    return np.clip(np.array(colour, np.float32)[None, None, :] + shade[:, :, None], 0, 255)


def glyph_rows(rng, img, x0, y0, x1, y1, ink, rows):
    """Text-like marks: rows of short strokes and dots of varying width."""
    height = (y1 - y0) / max(rows, 1)
    for r in range(rows):
        y = int(y0 + (r + 0.3) * height)
        stroke = max(1, int(height * rng.uniform(0.25, 0.45)))
        x = x0 + rng.uniform(0, 0.1) * (x1 - x0)
        end = x1 - rng.uniform(0, 0.35) * (x1 - x0)
        while x < end:
            glyph = rng.uniform(0.4, 1.2) * stroke * 2
            img[y:y + stroke, int(x):int(x + glyph)] = ink
            x += glyph + rng.uniform(0.3, 1.5) * stroke
    return img


def garment_mask(rng, h, w, category, cx, cy, s):
    """A garment silhouette from superellipses: a body, and sleeves or legs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def blob(x, y, rx, ry, p=2.5):
        return (np.abs((xx - x) / rx) ** p + np.abs((yy - y) / ry) ** p) <= 1

    if category == "pants":
        return blob(cx - 0.17 * s, cy + 0.1 * s, 0.15 * s, 0.5 * s, 4) | blob(cx + 0.17 * s, cy + 0.1 * s, 0.15 * s, 0.5 * s, 4) | blob(cx, cy - 0.35 * s, 0.32 * s, 0.12 * s, 6)
    if category == "dress":
        flare = (yy - (cy - 0.5 * s)) / s * 0.35 * s + 0.12 * s
        return (np.abs(xx - cx) <= flare) & (yy >= cy - 0.5 * s) & (yy <= cy + 0.55 * s)
    body = blob(cx, cy, 0.3 * s, 0.45 * s, 5)
    sleeve = 0.45 if category in ("outer", "knit") else 0.2
    arms = blob(cx - 0.35 * s, cy - 0.2 * s + sleeve * 0.3 * s, 0.1 * s, sleeve * s, 3) | blob(cx + 0.35 * s, cy - 0.2 * s + sleeve * 0.3 * s, 0.1 * s, sleeve * s, 3)
    neck = blob(cx, cy - 0.45 * s, 0.09 * s, 0.06 * s)
    return (body | arms) & ~neck


def full_shot(rng, h, w, category, colour):
    img = background(rng, h, w, mid_tone=rng.random() < 0.4)
    s = min(h, w) * rng.uniform(0.7, 1.15)
    cx = w / 2 + rng.uniform(-0.2, 0.2) * w
    cy = h / 2 + rng.uniform(-0.15, 0.2) * h
    mask = garment_mask(rng, h, w, category, cx, cy, s)
    shadow = np.roll(np.roll(mask, int(0.02 * s), 0), int(0.015 * s), 1) & ~mask
    img[shadow] *= 0.82
    cloth = fabric(rng, h, w, colour)
    shading = 1 + smooth_noise(rng, h, w, 3, 0.12)[:, :, None]
    img[mask] = (cloth * shading)[mask]
    return img


def detail_shot(rng, h, w, colour):
    img = fabric(rng, h, w, colour) * (1 + smooth_noise(rng, h, w, 3, 0.1)[:, :, None])
    roll = rng.random()
    if roll < 0.3:
        # A logo patch on the fabric: looks like a neck label.
        ph, pw = int(h * rng.uniform(0.15, 0.3)), int(w * rng.uniform(0.2, 0.4))
        y, x = int(rng.uniform(0.1, 0.7) * h), int(rng.uniform(0.1, 0.6) * w)
        patch_colour = rng.uniform(20, 240, size=3)
        img[y:y + ph, x:x + pw] = patch_colour
        glyph_rows(rng, img, x + pw * 0.1, y + ph * 0.2, x + pw * 0.9, y + ph * 0.8, 255 - patch_colour, 1)
    elif roll < 0.55:
        # A garment edge with background beyond it: looks like a full shot's outline.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        edge = xx * rng.uniform(-0.6, 0.6) + rng.uniform(0.55, 0.8) * w
        outside = yy > edge * (h / w) + smooth_noise(rng, h, w, 3, 0.05 * h)
        img[outside] = background(rng, h, w, mid_tone=rng.random() < 0.5)[outside]
    elif roll < 0.7:
        # A seam or a zip across the frame.
        y = int(rng.uniform(0.3, 0.7) * h)
        img[y:y + max(2, h // 60)] *= 0.6
        for x in range(0, w, max(4, w // 40)):
            img[y - 3:y + 5, x:x + max(2, w // 90)] = 170
    return img


def care_label(rng, h, w, colour):
    """A pale label, rotated up to 20 degrees, sometimes small or running out of frame."""
    canvas = fabric(rng, h, w, colour) * 0.9
    label_h = int(h * rng.uniform(0.35, 0.9))
    label_w = int(w * rng.uniform(0.3, 0.6))
    paper = rng.uniform(215, 250) + rng.normal(0, 4, size=3)
    label = np.ones((label_h, label_w, 3), np.float32) * paper
    ink = rng.uniform(10, 90)
    glyph_rows(rng, label, label_w * 0.08, label_h * 0.05, label_w * 0.92, label_h * 0.95, ink, int(rng.integers(5, 13)))
    pil = Image.fromarray(np.clip(label, 0, 255).astype(np.uint8)).convert("RGBA")
    pil = pil.rotate(rng.uniform(-20, 20), resample=Image.BICUBIC, expand=True)
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    x = int(rng.uniform(-0.15, 0.75) * w) if rng.random() < 0.25 else int((w - pil.width) / 2 + rng.uniform(-0.1, 0.1) * w)
    y = int((h - pil.height) / 2 + rng.uniform(-0.15, 0.15) * h)
    out.paste(pil, (x, y), pil)
    return np.asarray(out).astype(np.float32)


def neck_label(rng, h, w, colour):
    """The inside of a collar: a dark U-shaped opening, with a brand tag or a tagless print."""
    img = fabric(rng, h, w, colour)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, -rng.uniform(0.05, 0.3) * h
    rx, ry = w * rng.uniform(0.3, 0.45), h * rng.uniform(0.45, 0.7)
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    rim = (((xx - cx) / (rx * 1.12)) ** 2 + ((yy - cy) / (ry * 1.1)) ** 2 <= 1) & ~inside
    img[inside] *= 0.45
    img[rim] *= 1.15
    ty = int(cy + ry * 0.55)
    th, tw = int(h * rng.uniform(0.1, 0.2)), int(w * rng.uniform(0.15, 0.3))
    tx = int(cx - tw / 2)
    if rng.random() < 0.3:
        # Tagless: the brand printed on the fabric.
        glyph_rows(rng, img, tx, ty, tx + tw, ty + th, rng.uniform(200, 250), 2)
    else:
        tag = rng.uniform(20, 240, size=3)
        img[ty:ty + th, tx:tx + tw] = tag
        glyph_rows(rng, img, tx + tw * 0.1, ty + th * 0.15, tx + tw * 0.9, ty + th * 0.85, 255 - tag, 2)
    return img


def camera(rng, img):
    """Exposure, sensor noise and a little blur."""
    img = img * rng.uniform(0.9, 1.08) + rng.normal(0, rng.uniform(1.5, 5), size=img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.4))))
    return pil


def encode(rng, pil):
    """JPEG at quality 78-95, about 10% PNG, about 8% greyscale."""
    if rng.random() < 0.08:
        pil = pil.convert("L")
    buffer = io.BytesIO()
    if rng.random() < 0.1:
        pil.save(buffer, "PNG")
        return buffer.getvalue(), "png"
    pil.save(buffer, "JPEG", quality=int(rng.integers(78, 96)))
    return buffer.getvalue(), "jpg"


def near_copy(rng, data):
    """Resized +-15%, cropped <= 5%, brightened <= 18%, re-encoded."""
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = pil.size
    cx, cy = int(w * rng.uniform(0, 0.05)), int(h * rng.uniform(0, 0.05))
    pil = pil.crop((cx, cy, w - int(w * rng.uniform(0, 0.05)), h - int(h * rng.uniform(0, 0.05))))
    scale = rng.uniform(0.85, 1.15)
    pil = pil.resize((max(32, int(pil.width * scale)), max(32, int(pil.height * scale))), Image.BICUBIC)
    arr = np.asarray(pil).astype(np.float32) * rng.uniform(1.0, 1.18)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(75, 93)))
    return buffer.getvalue()


COLUMNS = ["main_image", "back_image", "text_tag_image", "neck_tag_image", "other"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--products", type=int, default=360)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    folder = args.out / "sample_images" / "product" / "b"
    folder.mkdir(parents=True, exist_ok=True)
    products, files = [], {}
    count = 0

    def save(data, extension):
        nonlocal count
        count += 1
        key = f"product/b/{count:05d}-{rng.integers(1 << 30):08x}.{extension}"
        (args.out / "sample_images" / key).write_bytes(data)
        files[key] = data
        return key

    for index in range(args.products):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        colour = rng.uniform(25, 235, size=3)
        row = {"id": f"B{200000 + index}", "category_name": category}
        plan = [("main_image", 1.0), ("back_image", 0.8), ("text_tag_image", 0.9), ("neck_tag_image", 0.8)]
        for column, chance in plan:
            keys = []
            if rng.random() < chance:
                h, w = int(rng.integers(300, 801)), int(rng.integers(300, 801))
                draw = {"main_image": lambda: full_shot(rng, h, w, category, colour),
                        "back_image": lambda: full_shot(rng, h, w, category, colour),
                        "text_tag_image": lambda: care_label(rng, h, w, colour),
                        "neck_tag_image": lambda: neck_label(rng, h, w, colour)}[column]
                keys.append(save(*encode(rng, camera(rng, draw()))))
            row[column] = "&".join(keys)
        details = []
        for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
            h, w = int(rng.integers(300, 801)), int(rng.integers(300, 801))
            details.append(save(*encode(rng, camera(rng, detail_shot(rng, h, w, colour)))))
        row["other"] = "&".join(details)
        products.append(row)

    # Copies filed under another product, in the column of their source.
    planted = []
    sources = [(i, c, k) for i, p in enumerate(products) for c in COLUMNS for k in p[c].split("&") if k]
    chosen = rng.choice(len(sources), size=40, replace=False)
    for n, pick in enumerate(chosen):
        owner, column, key = sources[pick]
        exact = n < 10
        data = files[key] if exact else near_copy(rng, files[key])
        copy = save(data, key.rsplit(".", 1)[1] if exact else "jpg")
        other = (owner + 1 + int(rng.integers(len(products) - 1))) % len(products)
        target = products[other]
        target[column] = "&".join([k for k in target[column].split("&") if k] + [copy])
        planted.append({"source": key, "copy": copy, "kind": "exact" if exact else "near"})

    with open(args.out / "image_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "category_name"] + COLUMNS)
        writer.writeheader()
        writer.writerows(products)
    with open(args.out / "planted_duplicates.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["source", "copy", "kind"])
        writer.writeheader()
        writer.writerows(planted)
    print(f"{len(products)} products, {count} photos ({len(planted)} planted copies) in {args.out}")


if __name__ == "__main__":
    main()
