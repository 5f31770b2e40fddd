#!/usr/bin/python3
"""Models and reference probabilities for the prediction tests, from PyTorch.

  make_predict_fixtures.py DIR          tiny models + refs (test/fixtures/predict)
  make_predict_fixtures.py full FILE    a full-size ResNet-18 (seeded random
                                        weights, 2 classes) for bench/predict.sh

Tiny models are torchvision's ResNet-18 layout (same state_dict keys, same
BasicBlock) with a smaller base width, seeded random weights and non-trivial
BatchNorm running statistics, so eval-mode BatchNorm is exercised.  refs.txt
holds, for each model and each committed image fixture Pillow can open, the
softmax probabilities of the eval transform (Resize(round(size * 256 / 224)),
CenterCrop(size), ToTensor, Normalize) followed by the forward pass in eval
mode: the oracle for tl_predict_proba.
"""
import os
import sys

import torch
import torch.nn as nn
from PIL import Image
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, resnet18

import safetensors_io

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.path.join(REPO, "test", "fixtures", "image")

# name, base width, classes, image size, seed
MODELS = [
    ("predict_a", 4, ["ants", "bees"], 32, 1),
    ("predict_b", 4, ["ants", "bees", "wasps"], 40, 2),
]


class SmallResNet18(nn.Module):
    """ResNet-18 with torchvision's module names, base width w instead of 64."""

    def __init__(self, w, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = w
        for i, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]):
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes))
            layer = nn.Sequential(BasicBlock(inplanes, planes, stride, down),
                                  BasicBlock(planes, planes))
            setattr(self, "layer%d" % (i + 1), layer)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomise(model, seed):
    """Seeded weights with BN statistics away from (0, 1) and visible logit spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif "bn" in name or "downsample.1" in name:
                t.copy_(0.75 + 0.5 * torch.rand(t.shape, generator=g))
            else:
                fan_in = t[0].numel()
                scale = (2.0 / fan_in) ** 0.5 * (0.1 if name.startswith("fc") else 1.0)
                t.copy_(scale * torch.randn(t.shape, generator=g))
    return model.eval()


def write_model(path, model):
    safetensors_io.write(path, [(k, t.float()) for k, t in model.state_dict().items()
                                if not k.endswith("num_batches_tracked")])


def eval_transform(size):
    return transforms.Compose([
        transforms.Resize((size * 256 + 112) // 224),  # tl_eval_resize_for
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def fixtures(out):
    os.makedirs(out, exist_ok=True)
    images = sorted(f for f in os.listdir(IMAGES) if f.endswith((".jpg", ".png")))
    lines = ["# model image probabilities... (torch %s, eval mode, fp32)" % torch.__version__]
    for name, w, classes, size, seed in MODELS:
        model = randomise(SmallResNet18(w, len(classes)), seed)
        write_model(os.path.join(out, name + ".safetensors"), model)
        tf = eval_transform(size)
        for img in images:
            x = tf(Image.open(os.path.join(IMAGES, img)).convert("RGB")).unsqueeze(0)
            with torch.no_grad():
                p = torch.softmax(model(x), 1)[0]
            lines.append("%s %s %s" % (name, img, " ".join("%.8g" % v for v in p.tolist())))
    with open(os.path.join(out, "refs.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def full(path):
    torch.manual_seed(0)
    model = resnet18(num_classes=2).eval()
    write_model(path, model)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) == 3 and sys.argv[1] == "full":
        full(sys.argv[2])
    elif len(sys.argv) == 2:
        fixtures(sys.argv[1])
    else:
        sys.exit(__doc__)
