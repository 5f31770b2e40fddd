#!/usr/bin/python3
"""PyTorch's side of test/t/embed_torch.sh.

  embed_torch.py DIR IMAGE...
      DIR/resnet18.pth: torchvision's resnet18() (1000 classes) with seeded
      random weights and non-trivial BatchNorm running statistics;
      DIR/embeddings.txt: per image "NAME v1 ... v512", the backbone output
      (model.fc = Identity, eval mode) on torchvision's eval transform
      (Resize(256), CenterCrop(224), ToTensor, Normalize with ImageNet's
      mean and std); DIR/predictions.txt: per image "NAME INDEX CATEGORY",
      the full model's argmax and its torchvision ImageNet category name.
"""
import os
import sys

import torch
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.models import _meta


def main():
    out, images = sys.argv[1], sys.argv[2:]
    torch.manual_seed(15)
    model = torchvision.models.resnet18()
    g = torch.Generator().manual_seed(16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    torch.save(model.state_dict(), os.path.join(out, "resnet18.pth"))
    model.eval()
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    backbone = torchvision.models.resnet18()
    backbone.load_state_dict(model.state_dict())
    backbone.fc = torch.nn.Identity()
    backbone.eval()
    with open(os.path.join(out, "embeddings.txt"), "w") as emb, \
            open(os.path.join(out, "predictions.txt"), "w") as pred, torch.no_grad():
        for path in images:
            x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
            f = backbone(x)[0]
            emb.write(os.path.basename(path) + " " + " ".join(repr(float(v)) for v in f) + "\n")
            k = int(model(x)[0].argmax())
            pred.write("%s\t%d\t%s\n" % (os.path.basename(path), k, _meta._IMAGENET_CATEGORIES[k]))


if __name__ == "__main__":
    main()
