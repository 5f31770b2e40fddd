#!/usr/bin/python3
"""The PyTorch side of bench/e2e.sh (run with /usr/bin/python3: torch 1.13).

  torch_tutorial.py train MODE WEIGHTS DATA_DIR THREADS [EPOCHS]
      The transfer-learning tutorial's train_model for EPOCHS (default 1)
      epochs, MODE finetune or feature_extractor, from the base weights in
      WEIGHTS (safetensors; fc is replaced by a new Linear(512, classes) as
      the tutorial does).  Prints "key value" lines: seconds of the whole job
      (building the datasets and loaders, the model, loading the weights,
      train_model), of the train and val phases, and the process's peak RSS.
  torch_tutorial.py eval WEIGHTS DATA_DIR THREADS
      Inference over DATA_DIR/val at batch 1: per image, Pillow decode +
      convert('RGB'), Resize(256), CenterCrop(224), ToTensor, Normalize, the
      eval forward pass and the argmax.  The files are read into memory first
      (the SQL side reads them from a table).  Prints seconds and images/s.

Choices that make the comparison fair on a shared 2-core machine:
- torch.set_num_threads(THREADS), the same count the SQL side uses;
- DataLoader(num_workers=0): decoding and augmentation run in the training
  process, on the same CPU budget (the tutorial's num_workers=4 would add
  four processes competing for the same two cores);
- StepLR stepped at the end of an epoch (current PyTorch; the tutorial's
  call at the start only shifts the schedule, not the cost).
Weights' values don't change the speed; the base model is the same seeded
random ResNet-18 the SQL side imports.
"""
import copy
import io
import os
import resource
import sys
import time

import torch
import torch.nn as nn
from PIL import Image
from torchvision import datasets, transforms
from torchvision.models import resnet18

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "scripts"))
from safetensors_io import read_f32 as read_safetensors  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def is_jpeg_or_png(path):
    return path.lower().endswith((".jpg", ".jpeg", ".png"))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_model(model, criterion, optimizer, scheduler, dataloaders, dataset_sizes,
                num_epochs, times):
    """The tutorial's train_model (printing left out), with phase timings."""
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    for epoch in range(num_epochs):
        for phase in ["train", "val"]:
            t0 = time.perf_counter()
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
            epoch_acc = running_corrects.double() / dataset_sizes[phase]
            if phase == "val" and epoch_acc > best_acc:
                best_acc = epoch_acc
                best_model_wts = copy.deepcopy(model.state_dict())
            times[phase] = times.get(phase, 0.0) + time.perf_counter() - t0
    model.load_state_dict(best_model_wts)
    return model


def train(mode, weights, root, threads, epochs):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
        "val": transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
    }
    # JPEG and PNG only, the formats tl_import_folder imports (hymenoptera's
    # one GIF is skipped on both sides: 244 train + 153 val images)
    image_datasets = {x: datasets.ImageFolder(os.path.join(root, x), data_transforms[x],
                                              is_valid_file=is_jpeg_or_png)
                      for x in ["train", "val"]}
    dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4,
                                                  shuffle=True, num_workers=0)
                   for x in ["train", "val"]}
    dataset_sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
    num_classes = len(image_datasets["train"].classes)

    model = resnet18()
    sd = read_safetensors(weights)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    model.load_state_dict(sd, strict=False)
    if mode == "feature_extractor":
        for p in model.parameters():
            p.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    criterion = nn.CrossEntropyLoss()
    params = model.fc.parameters() if mode == "feature_extractor" else model.parameters()
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    times = {}
    train_model(model, criterion, optimizer, scheduler, dataloaders, dataset_sizes, epochs, times)
    total = time.perf_counter() - t0
    print("seconds %.4f" % total)
    print("train_seconds %.4f" % times["train"])
    print("val_seconds %.4f" % times["val"])
    print("peak_rss_mib %.1f" % peak_rss_mib())


def eval_setup(weights, root, threads):
    """The eval model on THREADS threads, the eval transform and the val files' bytes."""
    torch.set_num_threads(threads)
    sd = read_safetensors(weights)
    model = resnet18(num_classes=sd["fc.weight"].shape[0])
    model.load_state_dict(sd, strict=False)
    model.eval()
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    files = []
    for cls in sorted(os.listdir(os.path.join(root, "val"))):
        d = os.path.join(root, "val", cls)
        for f in sorted(os.listdir(d)):
            if not is_jpeg_or_png(f):
                continue
            with open(os.path.join(d, f), "rb") as fh:
                files.append(fh.read())
    return model, tf, files


def evaluate(weights, root, threads):
    model, tf, files = eval_setup(weights, root, threads)
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))  # warm-up, like the SQL side's warm session
        t0 = time.perf_counter()
        for data in files:
            x = tf(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
            int(model(x).argmax(1))
        seconds = time.perf_counter() - t0
    print("images %d" % len(files))
    print("seconds %.4f" % seconds)
    print("images_per_s %.3f" % (len(files) / seconds))
    print("peak_rss_mib %.1f" % peak_rss_mib())


def main():
    if len(sys.argv) >= 6 and sys.argv[1] == "train" and sys.argv[2] in ("finetune", "feature_extractor"):
        epochs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
        train(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), epochs)
    elif len(sys.argv) == 5 and sys.argv[1] == "eval":
        evaluate(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
