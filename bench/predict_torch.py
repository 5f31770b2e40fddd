#!/usr/bin/python3
"""PyTorch eager inference, the baseline of bench/predict.sh.

  predict_torch.py WEIGHTS.safetensors DATASET_DIR THREADS [SPLIT]

Reads the split's JPEG/PNG files into memory first (the SQL side reads them
from a table), then times, per image and batch 1: Pillow decode +
convert('RGB'), Resize(256), CenterCrop(224), ToTensor, Normalize, the
forward pass of torchvision's resnet18 in eval mode and the argmax.  Prints
"images seconds" and then one "name class" line per image.
"""
import io
import os
import sys
import time

import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import resnet18

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "scripts"))
from safetensors_io import read_f32 as read_safetensors  # noqa: E402


def main():
    weights, root, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    split = sys.argv[4] if len(sys.argv) > 4 else "val"
    torch.set_num_threads(threads)
    sd = read_safetensors(weights)
    model = resnet18(num_classes=sd["fc.weight"].shape[0])
    model.load_state_dict(sd, strict=False)
    model.eval()
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    files = []
    for cls in sorted(os.listdir(os.path.join(root, split))):
        d = os.path.join(root, split, cls)
        for f in sorted(os.listdir(d)):
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                with open(os.path.join(d, f), "rb") as fh:
                    files.append((f, fh.read()))
    preds = []
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))		# warm-up, as the SQL side's first query loads
        t0 = time.perf_counter()
        for name, data in files:
            x = tf(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
            preds.append((name, int(model(x).argmax(1))))
        seconds = time.perf_counter() - t0
    print(len(files), "%.4f" % seconds)
    for name, p in preds:
        print(name, p)


if __name__ == "__main__":
    main()
