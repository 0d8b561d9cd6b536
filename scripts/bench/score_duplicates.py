"""How well `divide --find-duplicates` finds the copies a catalogue generator planted.

usage: score_duplicates.py PLANTED_CSV DUPLICATES_CSV
PLANTED_CSV: source, copy, kind (scripts/make_catalogue_b.py writes it); DUPLICATES_CSV: the
duplicates.csv `divide --find-duplicates` writes (group, image_path, product_id, image_type,
split, distance, kind). Prints one JSON line: planted pairs found (both images in one group),
other pairs (two images of one group that are not a planted pair), groups whose images
landed in more than one split.
"""
import csv
import itertools
import json
import sys
from collections import defaultdict


def main(planted_csv, duplicates_csv):
    planted = {frozenset((r["source"], r["copy"])) for r in csv.DictReader(open(planted_csv, newline=""))}
    groups, splits = defaultdict(set), defaultdict(set)
    for row in csv.DictReader(open(duplicates_csv, newline="")):
        groups[row["group"]].add(row["image_path"])
        splits[row["group"]].add(row["split"])
    pairs = {frozenset(p) for members in groups.values() for p in itertools.combinations(sorted(members), 2)}
    found = planted & pairs
    other = sorted(tuple(sorted(p)) for p in pairs - planted)
    print(json.dumps({
        "planted_pairs": len(planted),
        "found": len(found),
        "other_pairs": len(other),
        "other_examples": other[:5],
        "groups_across_splits": sum(1 for s in splits.values() if len(s) > 1),
        "missed": sorted(tuple(sorted(p)) for p in planted - found)[:10],
    }))


if __name__ == "__main__":
    main(*sys.argv[1:3])
