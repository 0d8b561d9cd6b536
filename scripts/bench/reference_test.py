"""What the Python system's `test.py --csv-path` does, as the reference for `test --csv-path`:
PIL open + convert RGB + torchvision Resize + ToTensor + Normalize, a DataLoader with 2
workers and batch 64, the model in eval mode, a CSV of predictions. Timed from process
start (imports included, as a user waits for them) by the caller.

usage: .venv/bin/python scripts/bench/reference_test.py MODEL.safetensors IMAGES.csv OUT.csv
"""
import csv
import sys
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imgtype_torch import load_model_file  # noqa: E402


class Images(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def main():
    model_path, csv_path, out_path = sys.argv[1:4]
    model, metadata = load_model_file(model_path)
    size = int(metadata["image_size"])
    class_names = eval(metadata["class_names"])  # a JSON list of strings
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    paths = [row["image_path"] for row in csv.DictReader(open(csv_path))]
    loader = DataLoader(Images(paths, transform), batch_size=64, num_workers=2)
    with open(out_path, "w", newline="") as f, torch.no_grad():
        writer = csv.writer(f)
        writer.writerow(["image_path", "predicted_class", "confidence"])
        done = 0
        for batch in loader:
            probs = torch.softmax(model(batch), dim=1)
            confidence, index = probs.max(dim=1)
            for j in range(len(batch)):
                writer.writerow([paths[done + j], class_names[index[j]], f"{confidence[j]:.6f}"])
            done += len(batch)


if __name__ == "__main__":
    main()
