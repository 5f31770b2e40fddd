#!/usr/bin/python3
"""PyTorch reference for bench/e2e.sh's user-table prediction case.

  torch_predict_user.py WEIGHTS DATA_DIR THREADS REPEAT

The val images of DATA_DIR, REPEAT times each (as the SQL side's table of
the val images x REPEAT), read into memory first.  End to end per image:
Pillow decode + convert('RGB'), Resize(256), CenterCrop(224), ToTensor,
Normalize, the eval forward and the argmax; once at batch 1 and once at
batch 32 (the forward takes 32 transformed images at a time; decoding and
transforms stay per image).  Prints "key value" lines: images,
batch1_seconds, batch32_seconds.
"""
import io
import os
import sys
import time

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_tutorial import eval_setup  # noqa: E402


def main():
    weights, root, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model, tf, files = eval_setup(weights, root, threads)
    files = files * repeat

    def load(data):
        return tf(Image.open(io.BytesIO(data)).convert("RGB"))

    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))		# warm-up, as the SQL side's first query loads
        t0 = time.perf_counter()
        for data in files:
            int(model(load(data).unsqueeze(0)).argmax(1))
        b1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(files), 32):
            x = torch.stack([load(d) for d in files[i:i + 32]])
            model(x).argmax(1).tolist()
        b32 = time.perf_counter() - t0
    print("images", len(files))
    print("batch1_seconds", "%.4f" % b1)
    print("batch32_seconds", "%.4f" % b32)


if __name__ == "__main__":
    main()
