"""Crafted model files a hostile user could hand to `test`, the API or the Python module:
`torch.save` archives whose pickle nests a million levels deep, copies memo entries into
10^30 values ("billion laughs"), builds tensor views outside their storage, or whose storage
is a deflate bomb. Written by hand, opcode by opcode (no binary blobs in the repository).
Each file gets the text its error must contain in `expectations.json`.

usage: .venv/bin/python scripts/make_hostile_models.py OUT_DIR
"""
import json
import struct
import sys
import zipfile
from pathlib import Path

OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)
expectations = {}


def archive(name, pickle, storages=(), expect="", deflate_storages=False):
    """A torch.save-shaped zip: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    path = OUT / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/byteorder", "little")
        for key, data in storages:
            kind = zipfile.ZIP_DEFLATED if deflate_storages else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(f"archive/data/{key}"), data, compress_type=kind)
        z.writestr("archive/version", "3\n")
    expectations[name] = expect


def text(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def global_(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def int_(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return b"\x8a\x08" + struct.pack("<q", v)


def tuple_(*items):
    return b"(" + b"".join(items) + b"t"


def tensor_state_dict(offset, size, stride, numel=4):
    """{'w': _rebuild_tensor_v2(<FloatStorage of numel>, offset, size, stride, False, {})}."""
    storage = tuple_(text("storage"), global_("torch", "FloatStorage"), text("0"), text("cpu"), int_(numel)) + b"Q"
    rebuild = (
        global_("torch._utils", "_rebuild_tensor_v2")
        + tuple_(
            storage,
            int_(offset),
            tuple_(*map(int_, size)),
            tuple_(*map(int_, stride)),
            b"\x89",
            global_("collections", "OrderedDict") + b")R",
        )
        + b"R"
    )
    return b"\x80\x02" + global_("collections", "OrderedDict") + b")R" + b"(" + text("w") + rebuild + b"u."


floats = struct.pack("<4f", 1, 2, 3, 4)

# 10^6 nested lists: a recursive reader overflows its stack.
archive("nested_lists.pth", b"\x80\x02" + b"]" * 1_000_000 + b"a" * 999_999 + b".", expect="deeper than")
archive("nested_tuples.pth", b"\x80\x02N" + b"\x85" * 1_000_000 + b".", expect="deeper than")

# Tensor views outside their storage.
archive("negative_offset.pth", tensor_state_dict(-8, [2], [1]), [("0", floats)], "negative offset")
archive("negative_stride.pth", tensor_state_dict(0, [2], [-1]), [("0", floats)], "negative offset, size or stride")
archive("negative_size.pth", tensor_state_dict(0, [-5], [1]), [("0", floats)], "negative offset, size or stride")
archive("huge_size.pth", tensor_state_dict(0, [2**62], [1]), [("0", floats)], "reach past")
archive("overflowing_size.pth", tensor_state_dict(0, [2**40, 2**40], [1, 1]), [("0", floats)], "overflows")
archive("expanded_view.pth", tensor_state_dict(0, [2**40], [0]), [("0", floats)], "expanded view")

# "Billion laughs": each level a list of 10 references to the level below (~1 KB).
laughs = bytearray(b"\x80\x02]Naq\x00")
for level in range(30):
    laughs += b"(" + b"".join(b"h" + bytes([level]) for _ in range(10)) + b"lq" + bytes([level + 1])
laughs += b"."
archive("billion_laughs.pth", bytes(laughs), expect="values (a pickle bomb?)")

# A storage that inflates to 512 MiB of zeros from about 500 KB.
chunk = b"\x00" * (1 << 20)
path = OUT / "deflate_bomb.pth"
with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", tensor_state_dict(0, [4], [1], numel=1 << 27))
    z.writestr("archive/byteorder", "little")
    info = zipfile.ZipInfo("archive/data/0")
    info.compress_type = zipfile.ZIP_DEFLATED
    with z.open(info, "w", force_zip64=True) as entry:
        for _ in range(512):
            entry.write(chunk)
expectations["deflate_bomb.pth"] = "inflates to"

(OUT / "expectations.json").write_text(json.dumps(expectations, indent=1))
print(f"{len(expectations)} crafted model files in {OUT}")
