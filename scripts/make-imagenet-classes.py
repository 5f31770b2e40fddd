#!/usr/bin/python3
"""Write src/pg/imagenet_classes.c: torchvision's ImageNet-1k category names.

  scripts/make-imagenet-classes.py > src/pg/imagenet_classes.c

The names are torchvision's list (torchvision/models/_meta.py,
_IMAGENET_CATEGORIES, the same list as every ImageNet weights enum's
meta["categories"]), read from Debian's python3-torchvision.  tl_import_weights
gives them to a 1000-class checkpoint imported without class names.
"""
import sys

import torchvision
from torchvision.models import _meta
from torchvision.models import ResNet18_Weights

names = list(_meta._IMAGENET_CATEGORIES)
if len(names) != 1000 or len(set(names)) != 1000:
    sys.exit("expected 1000 distinct ImageNet category names, got %d" % len(names))
if names != list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"]):
    sys.exit("_IMAGENET_CATEGORIES differs from ResNet18_Weights' categories")


def c_string(s):
    if any(ord(c) < 32 or ord(c) > 126 for c in s):
        sys.exit("unexpected character in %r" % s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


out = sys.stdout
out.write("/*\n"
          " * imagenet_classes.c - torchvision's ImageNet-1k category names, index 0..999.\n"
          " *\n"
          " * GENERATED, do not edit: scripts/make-imagenet-classes.py > src/pg/imagenet_classes.c\n"
          " * from torchvision %s (Debian python3-torchvision),\n"
          " * torchvision.models._meta._IMAGENET_CATEGORIES.\n"
          " */\n" % torchvision.__version__)
out.write('#include "imagenet_classes.h"\n\n')
out.write("const char *const tl_imagenet_classes[TL_IMAGENET_NUM_CLASSES] = {\n")
for i, name in enumerate(names):
    out.write("\t%s,%s\n" % (c_string(name), "\t\t\t\t/* %d */" % i if i % 10 == 0 else ""))
out.write("};\n")
