"""Awkward inputs, generated (no binary blobs in the repository): images that are huge,
truncated, empty, mislabelled or merely unusual, and CSVs with encoding and quoting
trouble. Each file gets an expectation in `expectations.json`:

  {"images": {"<file>": {"expect": "ok" | "error", "reason": "<text the error contains>",
                         "size": [w, h]  (ok images: size after EXIF orientation)}},
   "csvs":   {"<file>": {"expect": "...", "note": "..."}}}

usage: .venv/bin/python scripts/make_awkward_corpus.py OUT_DIR
"""
import io
import json
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

OUT = Path(sys.argv[1])
IMAGES = OUT / "images"
images = {}
csvs = {}


def photo(w=64, h=48, mode="RGB"):
    """A small image with some structure, so that JPEG has real entropy-coded data."""
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 7 + y * 3) % 256, (x * y) % 256, (255 - x * 4) % 256)
    return img.convert(mode) if mode != "RGB" else img


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(name, data, expect="ok", reason=None, size=None):
    (IMAGES / name).write_bytes(data)
    entry = {"expect": expect}
    if reason:
        entry["reason"] = reason
    if size:
        entry["size"] = list(size)
    images[name] = entry


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width, height):
    """A real decompression bomb: a grayscale PNG of zeros, a few hundred KB on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    idat = b"".join(parts)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_with_declared_size(width, height):
    """A small real JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(encode(photo(), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def jpeg_of_many_scans(side, ac_scans):
    """A grey progressive JPEG of side x side (a multiple of 64): one DC scan, then ac_scans
    scans of the same AC band, each one end-of-band run per 16,384 blocks. Thousands of
    scans make a small file that takes a decoder minutes (issue 26)."""
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xdb\x00\x43\x00" + b"\x01" * 64
    out += b"\xff\xc2\x00\x0b\x08" + struct.pack(">HH", side, side) + b"\x01\x01\x11\x00"
    for table, symbol in ((0x00, 0x00), (0x10, 0xE0)):
        out += b"\xff\xc4\x00\x14" + bytes([table, 1] + [0] * 15 + [symbol])
    blocks = (side // 8) ** 2
    out += b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00" + b"\x00" * (blocks // 8)
    bits = -(-blocks // 16384) * 15
    ac = bytearray(-(-bits // 8))
    if bits % 8:
        ac[-1] = (1 << (8 - bits % 8)) - 1
    for _ in range(ac_scans):
        out += b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x00" + ac
    return bytes(out + b"\xff\xd9")


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    jpeg = encode(photo(), "JPEG", quality=90)
    png = encode(photo(), "PNG")

    write("plain.jpg", jpeg, size=(64, 48))
    write("plain.png", png, size=(64, 48))
    # Decompression bombs: refused from the header, before any pixel is decoded.
    write("bomb_20000x20000.png", png_bomb(20000, 20000), "error", "over the limit")
    write("bomb_65000x65000.jpg", jpeg_with_declared_size(65000, 65000), "error", "over the limit")
    # Truncated data at several cut points: an error, not a grey patch.
    for fraction in (0.3, 0.6, 0.9):
        cut = int(len(jpeg) * fraction)
        write(f"truncated_{int(fraction * 100)}.jpg", jpeg[:cut], "error", "truncated")
    write("truncated_no_eoi.jpg", jpeg[:-2], "error", "truncated")
    for fraction in (0.5, 0.9):
        write(f"truncated_{int(fraction * 100)}.png", png[: int(len(png) * fraction)], "error", "truncated")
    write("truncated_no_iend.png", png[:-12], "error", "truncated")
    write("header_only.jpg", jpeg[:20], "error", None)
    write("empty.jpg", b"", "error", "empty")
    write("html.jpg", b"<html><body>404 Not Found</body></html>\n", "error", "not an image")
    write("text.png", b"just some text, not a picture\n", "error", "not an image")
    # A progressive JPEG of 2,000 scans (seconds to decode each time, minutes at 10,000):
    # refused from a count of its scan headers, before any decoder runs.
    write("scans_2000.jpg", jpeg_of_many_scans(1024, 2000), "error", "scans")
    # Unusual but valid.
    write("progressive.jpg", encode(photo(), "JPEG", quality=90, progressive=True), size=(64, 48))
    write("scans_60.jpg", jpeg_of_many_scans(256, 59), size=(256, 256))
    write("cmyk.jpg", encode(photo(mode="CMYK"), "JPEG", quality=90), size=(64, 48))
    write("gray16.png", encode(photo().convert("I;16"), "PNG"), size=(64, 48))
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    write("palette_transparent.png", encode(palette, "PNG", transparency=0), size=(64, 48))
    write("rgba.png", encode(photo().convert("RGBA"), "PNG"), size=(64, 48))
    frames = [photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    write("animated.gif", buf.getvalue(), size=(64, 48))
    write("image.webp", encode(photo(), "WEBP", quality=80), size=(64, 48))
    write("image.bmp", encode(photo(), "BMP"), size=(64, 48))
    write("one_pixel.png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), size=(1, 1))
    write("wide_4000x1.png", encode(Image.new("RGB", (4000, 1), (10, 200, 10)), "PNG"), size=(4000, 1))
    write("png_named.jpg", png, size=(64, 48))
    write("jpeg_named.png", jpeg, size=(64, 48))
    write("no_extension", jpeg, size=(64, 48))
    for orientation in range(1, 9):
        data = encode(photo(), "JPEG", quality=90, exif=exif_orientation(orientation))
        size = (48, 64) if orientation >= 5 else (64, 48)
        write(f"exif_orientation_{orientation}.jpg", data, size=size)

    # A 20 GB file (sparse: nothing is written) named like a photo: refused from its size,
    # before a byte is read, at every entry point.
    with open(IMAGES / "huge_sparse.jpg", "wb") as f:
        f.truncate(20 << 30)
    images["huge_sparse.jpg"] = {"expect": "error", "reason": "more than data.max_image_bytes"}

    # CSVs that list images of this corpus (paths relative to images/).
    header = "image_path,image_type\n"
    good = ["plain.jpg,full_shot", "plain.png,care_label", "cmyk.jpg,detail_shot"]
    (OUT / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (header + "\n".join(good) + "\n").encode())
    csvs["bom.csv"] = {"expect": "ok", "rows": 3}
    (OUT / "crlf.csv").write_bytes((header + "\n".join(good) + "\n").replace("\n", "\r\n").encode())
    csvs["crlf.csv"] = {"expect": "ok", "rows": 3}
    lines = [good[0], '"plain.png,care_label', good[2]]
    (OUT / "bad_quote.csv").write_text(header + "\n".join(lines) + "\n")
    csvs["bad_quote.csv"] = {"expect": "rows", "rows": 3, "note": "an unbalanced quote costs its own row only"}
    (OUT / "two_image_columns.csv").write_text("image_path,image_type,image_path\nplain.jpg,full_shot,plain.png\n")
    csvs["two_image_columns.csv"] = {"expect": "error", "reason": "2 `image_path` columns"}
    lines = [good[0], "plain.png,care_label,extra,fields", "cmyk.jpg", good[2]]
    (OUT / "field_counts.csv").write_text(header + "\n".join(lines) + "\n")
    csvs["field_counts.csv"] = {"expect": "rows", "rows": 4}
    (OUT / "non_utf8.csv").write_bytes(
        header.encode() + good[0].encode() + b"\n" + b"caf\xe9.jpg,full_shot\n" + good[2].encode() + b"\n"
    )
    csvs["non_utf8.csv"] = {"expect": "rows", "rows": 3}
    (OUT / "empty.csv").write_bytes(b"")
    csvs["empty.csv"] = {"expect": "error", "reason": "header"}
    (OUT / "header_only.csv").write_text(header)
    csvs["header_only.csv"] = {"expect": "error", "reason": "no rows"}

    (OUT / "expectations.json").write_text(json.dumps({"images": images, "csvs": csvs}, indent=2) + "\n")


main()
