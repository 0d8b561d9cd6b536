"""Plants duplicate photos into any catalogue, as scripts/make_catalogue_b.py plants them into
its own: 30 near-copies (resized +-15%, cropped <= 5% per side, brightened <= 18%, re-encoded
as JPEG 75-92) and 10 exact copies, each filed under another product in its source's column.

usage: plant_duplicates.py CATALOGUE_CSV IMAGES_DIR OUT_DIR [SEED=7]
Writes OUT_DIR/image_data.csv, OUT_DIR/sample_images (a copy of IMAGES_DIR with the copies
added under planted/) and OUT_DIR/planted_duplicates.csv (source, copy, kind), which
scripts/bench/score_duplicates.py scores `divide --find-duplicates` against.
"""
import csv
import re
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_catalogue_b import near_copy  # noqa: E402 (the same planting as that generator's)

COLUMNS = ["main_image", "back_image", "text_tag_image", "neck_tag_image", "other"]


def main(catalogue_csv, images_dir, out_dir, seed="7"):
    rng = np.random.default_rng(int(seed))
    out_dir = Path(out_dir)
    images = out_dir / "sample_images"
    if images.exists():
        shutil.rmtree(images)
    shutil.copytree(images_dir, images)
    (images / "planted").mkdir()
    with open(catalogue_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields, products = reader.fieldnames, list(reader)
    def keys(cell):
        return [k.strip() for k in re.split("[&,]", cell or "") if k.strip() and k.strip() != "nan"]

    sources = [(i, c, k) for i, p in enumerate(products) for c in COLUMNS for k in keys(p.get(c))]
    planted = []
    for n, pick in enumerate(rng.choice(len(sources), size=40, replace=False)):
        owner, column, key = sources[pick]
        exact = n < 10
        data = (images / key).read_bytes()
        suffix = key.rsplit(".", 1)[1] if exact else "jpg"
        copy = f"planted/{n:02d}.{suffix}"
        (images / copy).write_bytes(data if exact else near_copy(rng, data))
        target = products[(owner + 1 + int(rng.integers(len(products) - 1))) % len(products)]
        target[column] = "&".join(keys(target.get(column)) + [copy])
        planted.append({"source": key, "copy": copy, "kind": "exact" if exact else "near"})
    with open(out_dir / "image_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(products)
    with open(out_dir / "planted_duplicates.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["source", "copy", "kind"])
        writer.writeheader()
        writer.writerows(planted)
    print(f"{len(products)} products, {len(sources)} photos, 40 planted copies in {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
