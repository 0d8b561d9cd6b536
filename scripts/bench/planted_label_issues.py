"""Planted label faults, for measuring how well `train --cross-validate` finds them.

plant DATA_DIR OUT_DIR FRACTION SEED: copies DATA_DIR's three split files to OUT_DIR with
FRACTION of the images moved to another class (chosen at random, as a photo filed under the
wrong column), and writes OUT_DIR/planted.csv (image_path, product_id, true, given).

score CV_DIR PLANTED_CSV: precision among the top N and recall in the top 2N (N = number
planted) of our ranking (label_issues.csv, then the other images by oof_predictions.csv's
label_quality), and of cleanlab 2.9's find_label_issues on the same
oof_predictions.csv (ranked by self-confidence and by normalised margin), as one JSON line.
"""
import csv
import json
import random
import shutil
import sys
from pathlib import Path

SPLITS = ("train_data.csv", "validation_data.csv", "test_data.csv")


def plant(data_dir, out_dir, fraction, seed):
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in SPLITS:
        with open(data_dir / name, newline="") as f:
            rows[name] = list(csv.DictReader(f))
    everything = [(name, i) for name in SPLITS for i in range(len(rows[name]))]
    classes = sorted({r["image_type"] for name in SPLITS for r in rows[name]})
    rng = random.Random(seed)
    chosen = rng.sample(everything, round(fraction * len(everything)))
    planted = []
    for name, i in chosen:
        row = rows[name][i]
        given = rng.choice([c for c in classes if c != row["image_type"]])
        planted.append({"image_path": row["image_path"], "product_id": row["product_id"], "true": row["image_type"], "given": given})
        row["image_type"] = given
    for name in SPLITS:
        with open(out_dir / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["product_id", "image_path", "image_type"])
            writer.writeheader()
            writer.writerows(rows[name])
    if (data_dir / "duplicates.csv").exists():
        shutil.copy(data_dir / "duplicates.csv", out_dir / "duplicates.csv")
    with open(out_dir / "planted.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image_path", "product_id", "true", "given"])
        writer.writeheader()
        writer.writerows(planted)
    print(f"planted {len(planted)} wrong labels among {len(everything)} images in {out_dir}", file=sys.stderr)


def precision_recall(ranked_keys, planted_keys):
    n = len(planted_keys)
    top_n = ranked_keys[:n]
    top_2n = ranked_keys[: 2 * n]
    return {
        "listed": len(ranked_keys),
        "precision_top_n": sum(k in planted_keys for k in top_n) / n,
        "recall_top_2n": sum(k in planted_keys for k in top_2n) / n,
    }


def score(cv_dir, planted_csv):
    import numpy as np
    from cleanlab.filter import find_label_issues

    cv_dir = Path(cv_dir)
    with open(planted_csv, newline="") as f:
        planted = {(r["image_path"], r["product_id"]) for r in csv.DictReader(f)}
    with open(cv_dir / "label_issues.csv", newline="") as f:
        listed = [(r["image_path"], r["product_id"]) for r in csv.DictReader(f)]
    with open(cv_dir / "oof_predictions.csv", newline="") as f:
        reader = csv.DictReader(f)
        prob_columns = [c for c in reader.fieldnames if c.startswith("prob_")]
        classes = [c[len("prob_"):] for c in prob_columns]
        oof = list(reader)
    keys = [(r["image_path"], r["product_id"]) for r in oof]
    # Our ranking: label_issues.csv, then every other image by its label_quality.
    rest = sorted((float(r["label_quality"]), k) for r, k in zip(oof, keys) if k not in set(listed))
    ours = listed + [k for _, k in rest]
    probabilities = np.array([[float(r[c]) for c in prob_columns] for r in oof])
    labels = np.array([classes.index(r["image_type"]) for r in oof])
    accuracy = float((probabilities.argmax(1) == labels).mean())
    result = {"images": len(oof), "planted": len(planted), "oof_accuracy_vs_given": accuracy, "ours": precision_recall(ours, planted), "label_issues_csv_rows": len(listed)}
    for method in ("self_confidence", "normalized_margin"):
        ranked = find_label_issues(labels, probabilities, return_indices_ranked_by=method, n_jobs=1)
        result[f"cleanlab_{method}"] = precision_recall([keys[i] for i in ranked], planted)
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "plant":
        plant(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
