"""What the Python module's tests share: a model trained for one epoch on the first 20
products of the bundled sample, by the real divide and train binaries, in a work folder."""
import json
import subprocess
from pathlib import Path

root = Path(__file__).resolve().parents[2]


def run(*args, cwd):
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, capture_output=True)


def train_tiny_model(work, binaries, system):
    """Divides and trains in `work` (48 px, 1 epoch) with `system` as the config's system
    section; returns the best model's path. The split files are in work/data."""
    products = (root / "image_data.csv").read_text().splitlines()[:21]
    (work / "products.csv").write_text("\n".join(products) + "\n")
    run(binaries / "divide", "--input-file", "products.csv", "--random-state", "2", cwd=work)
    config = {
        "data": {"base_image_path": str(root / "sample_images")},
        "model": {"pretrained": False, "freeze_backbone_epochs": 0},
        "training": {"batch_size": 16, "epochs": 1},
        "augmentation": {"image_size": 48},
        "inference": {"batch_size": 8},
        "system": system,
    }
    (work / "config.json").write_text(json.dumps(config))
    run(binaries / "train", "--config", "config.json", cwd=work)
    return next((work / "results").iterdir()) / "model" / "best_model.safetensors"
