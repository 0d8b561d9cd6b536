"""A corpus of photo-format files that Pillow reads, across formats, modes and compressions,
with Pillow's own decode of each (`Image.open(f).convert("RGB")`, what the Python system
fed its model) as the reference the Rust decoder is compared with.

Writes OUT/files/<name> and OUT/reference.safetensors (uint8 [h, w, 3] per file name), and
OUT/manifest.json: {name: {"format": ..., "note": ...}}. A file that this Pillow cannot
read back is left out: the corpus is of files Pillow reads.

usage: .venv/bin/python tests/python/make_pillow_corpus.py OUT
"""
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from safetensors.numpy import save_file

OUT = Path(sys.argv[1])
FILES = OUT / "files"
FILES.mkdir(parents=True, exist_ok=True)
manifest = {}
reference = {}


def photo(w=96, h=72):
    """Gradients, edges and a disc: structure for lossy codecs, every channel different."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // (w - 1)).astype(np.uint8)
    g = (y * 255 // (h - 1)).astype(np.uint8)
    b = (((x // 8 + y // 8) % 2) * 180 + 40).astype(np.uint8)
    disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2
    r = np.where(disc, 230, r).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


PHOTO = photo()
BASE = Image.fromarray(PHOTO)


def add(name, data, fmt, note="", pillow_saturates=False, refused=False):
    path = FILES / name
    path.write_bytes(data)
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # Pillow cannot read it: not part of this corpus
        print(f"skipped {name}: Pillow cannot read it back ({e})")
        path.unlink()
        return
    manifest[name] = {"format": fmt, "note": note, "pillow_saturates": pillow_saturates, "refused": refused}
    reference[name] = np.ascontiguousarray(rgb)


def pil(image, fmt, **options):
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def modes(image):
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray((PHOTO[:, :, 0] // 2 + 100).astype(np.uint8)))
    return {
        "rgb": image,
        "rgba": rgba,
        "l": image.convert("L"),
        "la": image.convert("LA"),
        "p": image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "1": image.convert("1"),
        "cmyk": image.convert("CMYK"),
    }


# TIFF: Pillow (libtiff) strips with each compression, in each mode it writes.
for mode, image in modes(BASE).items():
    for compression in ["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "lzma", "group3", "tiff_ccitt", "group4"]:
        if compression == "jpeg" and mode not in ("rgb", "l", "cmyk"):
            continue
        if compression in ("group3", "tiff_ccitt", "group4") and mode != "1":
            continue
        try:
            data = pil(image, "TIFF", compression=compression)
        except Exception as e:
            print(f"Pillow cannot write TIFF {mode}/{compression}: {e}")
            continue
        add(f"tiff_{mode}_{compression}.tif", data, "tiff", f"{mode}, {compression}")
add("tiff_rgb_predictor.tif", pil(BASE, "TIFF", compression="tiff_lzw", tiffinfo={317: 2}), "tiff", "LZW + predictor")
add("tiff_rgb_lzma_predictor.tif", pil(BASE, "TIFF", compression="lzma", tiffinfo={317: 2}), "tiff", "LZMA + predictor")

# TIFF through tifffile: tiles, 16 bits per sample, planar layout, deflate with predictor.
photo16 = PHOTO.astype(np.uint16) * 257 + np.arange(PHOTO.shape[1], dtype=np.uint16)[None, :, None]
for name, array, options in [
    ("tiled_rgb_deflate", PHOTO, {"tile": (32, 32), "compression": "zlib"}),
    ("tiled_rgb_raw", PHOTO, {"tile": (16, 16)}),
    ("tiled_gray", PHOTO[:, :, 1], {"tile": (32, 32), "compression": "zlib"}),
    ("strips_rgb16", photo16, {"compression": "zlib"}),
    ("planar_rgb", PHOTO, {"planarconfig": "separate"}),
    ("rgb_predictor_deflate", PHOTO, {"compression": "zlib", "predictor": True}),
    ("rgb_rowsperstrip_5", PHOTO, {"rowsperstrip": 5}),
]:
    buf = io.BytesIO()
    photometric = "minisblack" if array.ndim == 2 else "rgb"
    tifffile.imwrite(buf, array, photometric=photometric, **options)
    add(f"tifffile_{name}.tif", buf.getvalue(), "tiff", name)

# BMP: what Pillow writes, and hand-made variants (16-bit bitfields, RLE8, top-down, V5 header).
for mode in ["rgb", "rgba", "l", "p", "1"]:
    add(f"bmp_{mode}.bmp", pil(modes(BASE)[mode], "BMP"), "bmp", mode)


def bmp(width, height, bits, pixel_rows, compression=0, header_size=40, palette=b"", masks=b"", top_down=False):
    data = b"".join(pixel_rows)
    info = struct.pack(
        "<IiiHHIIiiII", header_size, width, -height if top_down else height, 1, bits, compression, len(data),
        2835, 2835, len(palette) // 4, 0,
    )
    info += masks
    info += b"\0" * (header_size - len(info)) if header_size > len(info) else b""
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def padded(row):
    return row + b"\0" * (-len(row) % 4)


rows565 = []
for y in reversed(range(PHOTO.shape[0])):
    row = b"".join(
        struct.pack("<H", ((int(r) >> 3) << 11) | ((int(g) >> 2) << 5) | (int(b) >> 3)) for r, g, b in PHOTO[y]
    )
    rows565.append(padded(row))
masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
add("bmp_16bit_565.bmp", bmp(96, 72, 16, rows565, compression=3, masks=masks), "bmp", "16-bit BI_BITFIELDS 565")
rows24_top = [padded(PHOTO[y][:, ::-1].tobytes()) for y in range(PHOTO.shape[0])]
add("bmp_top_down.bmp", bmp(96, 72, 24, rows24_top, top_down=True), "bmp", "top-down rows")
rows24 = [padded(PHOTO[y][:, ::-1].tobytes()) for y in reversed(range(PHOTO.shape[0]))]
add("bmp_v5_header.bmp", bmp(96, 72, 24, rows24, header_size=124), "bmp", "BITMAPV5HEADER")
add("bmp_v4_header.bmp", bmp(96, 72, 24, rows24, header_size=108), "bmp", "BITMAPV4HEADER")
grey = BASE.convert("L")
grey_palette = b"".join(bytes([v, v, v, 0]) for v in range(256))
rle = bytearray()
for y in reversed(range(72)):
    row = np.asarray(grey)[y]
    for x in range(0, 96, 8):
        value = int(row[x])
        rle += bytes([8, value])
    rle += b"\0\0"
rle += b"\0\1"
add("bmp_rle8.bmp", bmp(96, 72, 8, [bytes(rle)], compression=1, palette=grey_palette), "bmp", "RLE8")

# TGA, ICO, PNM, QOI.
for mode in ["rgb", "rgba", "l", "p"]:
    for rle_on in [False, True]:
        add(f"tga_{mode}_{'rle' if rle_on else 'raw'}.tga", pil(modes(BASE)[mode], "TGA", rle=rle_on), "tga", mode)
add("ico_sizes.ico", pil(BASE.resize((64, 64)), "ICO", sizes=[(16, 16), (32, 32), (64, 64)]), "ico", "3 sizes")
add("ico_bmp_entry.ico", pil(BASE.resize((32, 32)), "ICO", sizes=[(32, 32)], bitmap_format="bmp"), "ico", "BMP entry")
add("pnm_ppm.ppm", pil(BASE, "PPM"), "pnm", "P6")
add("pnm_pgm.pgm", pil(BASE.convert("L"), "PPM"), "pnm", "P5")
add("pnm_pbm.pbm", pil(BASE.convert("1"), "PPM"), "pnm", "P4")
ascii_ppm = "P3\n96 72\n255\n" + "\n".join(" ".join(str(v) for v in row.flatten()) for row in PHOTO) + "\n"
add("pnm_ascii.ppm", ascii_ppm.encode(), "pnm", "P3 plain")
add("qoi_rgb.qoi", pil(BASE, "QOI"), "qoi", "rgb")
add("qoi_rgba.qoi", pil(modes(BASE)["rgba"], "QOI"), "qoi", "rgba")

# TIFF compressions libtiff writes beyond the common ones, and grey samples that are signed
# integers or floats (Pillow's modes I and F: convert("RGB") cuts and clips them to 0..255).
add("tiff_rgb_zstd.tif", pil(BASE, "TIFF", compression="zstd"), "tiff", "rgb, zstd")
grey = np.asarray(BASE.convert("L")).astype(np.int32)
add("tiff_grey_int32.tif", pil(Image.fromarray(grey * 2 - 120), "TIFF"), "tiff", "32-bit signed grey")
add("tiff_grey_float32.tif", pil(Image.fromarray((grey * 1.5 - 60.25).astype(np.float32)), "TIFF"), "tiff", "32-bit float grey")
for name, array in [("int16", (grey * 3 - 200).astype(np.int16)), ("float64", grey.astype(np.float64) / 2 + 0.75)]:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric="minisblack")
    add(f"tifffile_grey_{name}.tif", buf.getvalue(), "tiff", f"{name} grey")

# TIFFs Pillow reads and we still refuse (README, Image formats): counted as refused, each
# checked to be refused with a reason that names it, so the figure the test prints is honest.
add("tiff_lab.tif", pil(BASE.convert("LAB"), "TIFF"), "tiff", "CIELab", refused=True)

# 16-bit greyscale (Pillow's mode I;16): Pillow's convert("RGB") clips each value to 255, so
# its decode is white wherever the image is not black; ours scales 0..65535 to 0..255.
grey16 = Image.fromarray((np.asarray(BASE.convert("L")).astype(np.uint16) * 257))
add("png_grey16.png", pil(grey16, "PNG"), "png", "16-bit grey", pillow_saturates=True)
add("tiff_grey16.tif", pil(grey16, "TIFF"), "tiff", "16-bit grey", pillow_saturates=True)

# PNG, GIF, WebP, JPEG, AVIF.
for mode in ["rgb", "rgba", "l", "la", "p", "1"]:
    add(f"png_{mode}.png", pil(modes(BASE)[mode], "PNG"), "png", mode)
p_transparent = modes(BASE)["p"].copy()
p_transparent.info["transparency"] = 3
add("png_p_transparency.png", pil(p_transparent, "PNG", transparency=3), "png", "P with tRNS")
add("gif_p.gif", pil(modes(BASE)["p"], "GIF"), "gif", "P")
add("gif_l.gif", pil(BASE.convert("L"), "GIF"), "gif", "L")
add("gif_transparent.gif", pil(modes(BASE)["p"], "GIF", transparency=0), "gif", "transparency")


def gif_without_palette(pixels):
    """A GIF whose frame has no colour table at all (no global, no local): Pillow reads the
    indices as grey levels. LZW with a clear code every 254 pixels keeps codes 9 bits wide."""
    h, w = pixels.shape
    codes = []
    flat = pixels.flatten().tolist()
    for start in range(0, len(flat), 254):
        codes.append(256)
        codes.extend(flat[start:start + 254])
    codes.append(257)
    bits, value, packed = 0, 0, bytearray()
    for code in codes:
        value |= code << bits
        bits += 9
        while bits >= 8:
            packed.append(value & 0xFF)
            value >>= 8
            bits -= 8
    if bits:
        packed.append(value & 0xFF)
    blocks = b"".join(bytes([len(packed[i:i + 255])]) + bytes(packed[i:i + 255]) for i in range(0, len(packed), 255))
    header = b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    return header + descriptor + b"\x08" + blocks + b"\x00\x3b"


add("gif_no_palette.gif", gif_without_palette(np.asarray(BASE.convert("L"))), "gif", "frame without a palette")
add("webp_lossy.webp", pil(BASE, "WEBP", quality=90), "webp", "lossy")
add("webp_lossless.webp", pil(BASE, "WEBP", lossless=True), "webp", "lossless")
add("webp_alpha.webp", pil(modes(BASE)["rgba"], "WEBP", lossless=True), "webp", "lossless with alpha")
for name, image, options in [
    ("rgb", BASE, {"quality": 92}),
    ("rgb_444", BASE, {"quality": 92, "subsampling": 0}),
    ("progressive", BASE, {"quality": 92, "progressive": True}),
    ("l", BASE.convert("L"), {"quality": 92}),
    ("cmyk", BASE.convert("CMYK"), {"quality": 92}),
    ("restart_markers", BASE, {"quality": 92, "restart_marker_blocks": 4}),
]:
    try:
        add(f"jpeg_{name}.jpg", pil(image, "JPEG", **options), "jpeg", name)
    except TypeError:
        add(f"jpeg_{name}.jpg", pil(image, "JPEG", quality=92), "jpeg", name)
plain_jpeg = pil(BASE, "JPEG", quality=92)
# A malformed EXIF segment (a TIFF header that points nowhere) and a short APP14 segment.
bad_exif = b"Exif\0\0MM\0\x2a\xff\xff\xff\xff"
add("jpeg_malformed_exif.jpg", plain_jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(bad_exif) + 2) + bad_exif
    + plain_jpeg[2:], "jpeg", "malformed EXIF")
add("jpeg_short_app14.jpg", plain_jpeg[:2] + b"\xff\xee\x00\x09Adobe\x00\x64" + plain_jpeg[2:], "jpeg", "short APP14")
try:
    add("avif_rgb.avif", pil(BASE, "AVIF", quality=90), "avif", "rgb")
except Exception as e:
    print(f"Pillow cannot write AVIF: {e}")

save_file(reference, str(OUT / "reference.safetensors"))
(OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
print(f"{len(manifest)} files Pillow reads in {FILES}")
