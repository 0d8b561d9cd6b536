"""The Python system's training loop, as the reference for `train`: a split CSV read into
a Dataset (PIL open + convert RGB + Resize + RandomHorizontalFlip + RandomRotation +
ToTensor + Normalize), a shuffling DataLoader with 2 workers, the model in train mode,
AdamW, label-smoothed cross-entropy, gradient clipping. Prints the images/s of each epoch
(the loop only, as `train` reports it).

usage: .venv/bin/python scripts/bench/reference_train.py TRAIN.csv IMAGE_DIR SIZE BATCH EPOCHS
"""
import csv
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imgtype_torch import ImageTypeClassifier  # noqa: E402

CLASSES = ["care_label", "detail_shot", "full_shot", "neck_label"]


class Split(Dataset):
    def __init__(self, rows, image_dir, transform):
        self.rows, self.image_dir, self.transform = rows, Path(image_dir), transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        image = Image.open(self.image_dir / row["image_path"]).convert("RGB")
        return self.transform(image), CLASSES.index(row["image_type"])


def main():
    train_csv, image_dir, size, batch, epochs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    torch.manual_seed(0)
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    rows = list(csv.DictReader(open(train_csv)))
    loader = DataLoader(Split(rows, image_dir, transform), batch_size=batch, shuffle=True, num_workers=2)
    model = ImageTypeClassifier(len(CLASSES), 512, 0.2, 0.1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += len(labels)
        print(f"epoch {epoch + 1} images_per_second={seen / (time.perf_counter() - start):.2f}", flush=True)


if __name__ == "__main__":
    main()
