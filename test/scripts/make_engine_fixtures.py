#!/usr/bin/python3
"""Reference cases for the ResNet-18 engine, computed by PyTorch.

Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision):

    test/scripts/make_engine_fixtures.py small  test/fixtures/engine   # committed cases
    test/scripts/make_engine_fixtures.py full   build/engine_full      # 224x224, width 64

Each case is one safetensors file (written by safetensors_io.py).  Tensors, all F32:

  config        [num_classes, base_width, N, H, W, mode (0 finetune, 1 feature
                extractor), seed, steps, params_stored]
  sgd           [lr, momentum, dampening, weight_decay, nesterov]
  input         (steps, N, H, W, 3)   NHWC, as the engine takes it
  labels        (steps, N)            class indexes as floats
  param.KEY     initial parameters/buffers (only if params_stored; otherwise
                they are drawn from `seed` by fixture_fill() below, which the C
                test reimplements on tl_rng, to keep committed files small)
  logits        (N, K) train-mode logits of step 0
  loss          (steps,) train-mode loss of every step
  grad.KEY      gradient of every trained parameter at step 0
  after.KEY     (unless only step 0 is kept) every tensor that training may change (trained parameters and
                BN running statistics), after all steps; the others must
                still equal their initial values
  momentum.KEY  (likewise) SGD momentum buffers after all steps
  eval_logits   (N, K) eval-mode logits of batch 0 after all steps

Full-size cases also hold f64.* twins of logits, loss, grad.*, after.*,
momentum.* and eval_logits from the same run in float64: at 224x224,
float32 itself (PyTorch's included) is only ~3e-3 from the exact gradient,
so the C test measures both against float64 there.

A forward-only case (steps = 0) holds config, input, labels, param.*,
logits (train mode), loss[1] and eval_logits computed from the initial
parameters.
"""
import copy
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, resnet18

import safetensors_io

MASK = (1 << 64) - 1


class FixtureRng:
    """tl_rng (xoshiro256** seeded by splitmix64), bit for bit."""

    def __init__(self, seed):
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.s.append(z ^ (z >> 31))

    def next(self):
        s = self.s
        v = (s[1] * 5) & MASK
        result = ((((v << 7) | (v >> 57)) & MASK) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = ((s[3] << 45) | (s[3] >> 19)) & MASK
        return result

    def uniform(self, count):
        out = np.empty(count, dtype=np.float64)
        for i in range(count):
            out[i] = (self.next() >> 11) * (1.0 / (1 << 53))
        return out


def fixture_fill(model, seed, fast):
    """Initial values in state_dict order: drawn from tl_rng (the C test redraws
    them, see test_resnet_parity.c), or from torch when fast (values stored)."""
    rng = FixtureRng(seed)
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for key, t in sd.items():
            if key.endswith("num_batches_tracked"):
                continue
            if fast:
                u = torch.rand(t.numel(), generator=gen, dtype=torch.float64).numpy() * 2.0 - 1.0
            else:
                u = rng.uniform(t.numel()) * 2.0 - 1.0  # U(-1, 1)
            if key.endswith("running_var") or (key.endswith(".weight") and t.dim() == 1):
                v = 1.0 + 0.5 * u  # BN scale and running variance in [0.5, 1.5]
            elif key.endswith("running_mean") or key.endswith(".bias"):
                v = 0.2 * u
            else:  # conv and fc weights: uniform with kaiming fan-in variance
                fan_in = int(np.prod(t.shape[1:]))
                v = u * np.sqrt(6.0 / fan_in)
            t.copy_(torch.from_numpy(v.astype(np.float32)).reshape(t.shape))


class ResNet18(nn.Module):
    """torchvision's resnet18 with a configurable base width (64 is torchvision's)."""

    def __init__(self, num_classes, width):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(width, 1)
        self.layer2 = self._layer(2 * width, 2)
        self.layer3 = self._layer(4 * width, 2)
        self.layer4 = self._layer(8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)

    def _layer(self, planes, stride):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self.inplanes, planes, stride, down), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_model(num_classes, width):
    if width == 64:
        return resnet18(num_classes=num_classes)  # the real thing
    return ResNet18(num_classes, width)


def nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def run_torch(model, xs, ys, *, mode, steps, sgd, keep_after, prefix, out):
    """Train `model` on the batches as the engine will; store results under prefix."""
    if mode == "feature_extractor":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.fc.parameters():
            p.requires_grad_(True)
        trained = OrderedDict(("fc." + k, p) for k, p in model.fc.named_parameters())
    else:
        trained = OrderedDict(model.named_parameters())
    crit = nn.CrossEntropyLoss()
    losses = []
    f32 = lambda t: t.detach().float().numpy().copy()
    if steps == 0:
        model.train()
        logits = model(xs[0])
        losses.append(crit(logits, ys[0]).item())
        out[prefix + "logits"] = f32(logits)
    else:
        opt = torch.optim.SGD(list(trained.values()), lr=sgd["lr"], momentum=sgd["momentum"],
                              dampening=sgd["dampening"], weight_decay=sgd["weight_decay"],
                              nesterov=sgd["nesterov"])
        model.train()
        for step in range(steps):
            opt.zero_grad()
            logits = model(xs[step])
            loss = crit(logits, ys[step])
            loss.backward()
            if step == 0:
                out[prefix + "logits"] = f32(logits)
                for k, p in trained.items():
                    out[prefix + "grad." + k] = f32(p.grad)
            opt.step()
            losses.append(loss.item())
    out[prefix + "loss"] = losses
    if steps > 0 and keep_after:
        for k, v in model.state_dict().items():
            if k in trained or k.endswith("running_mean") or k.endswith("running_var"):
                out[prefix + "after." + k] = f32(v)
        for k, p in trained.items():
            out[prefix + "momentum." + k] = f32(opt.state[p]["momentum_buffer"])
    model.eval()
    with torch.no_grad():
        out[prefix + "eval_logits"] = f32(model(xs[0]))
    return losses


def make_case(path, *, num_classes, width, n, h, w, mode, seed, steps, sgd, store_params,
              keep_after=True, f64=False):
    torch.manual_seed(seed)
    model = make_model(num_classes, width)
    fixture_fill(model, seed, fast=store_params)
    init = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    model64 = copy.deepcopy(model).double() if f64 else None
    out = OrderedDict()
    out["config"] = [num_classes, width, n, h, w, 1 if mode == "feature_extractor" else 0, seed,
                     steps, 1 if store_params else 0]
    out["sgd"] = [sgd["lr"], sgd["momentum"], sgd["dampening"], sgd["weight_decay"],
                  1.0 if sgd["nesterov"] else 0.0]
    nb = max(steps, 1)
    xs = torch.randn(nb, n, 3, h, w)
    ys = torch.randint(0, num_classes, (nb, n))
    out["input"] = np.stack([nhwc(xs[i]) for i in range(nb)])
    out["labels"] = ys.numpy().astype(np.float32)
    if store_params:
        for k, v in init.items():
            out["param." + k] = v.numpy()
    kw = dict(mode=mode, steps=steps, sgd=sgd, keep_after=keep_after, out=out)
    losses = run_torch(model, xs, ys, prefix="", **kw)
    if f64:
        run_torch(model64, xs.double(), ys, prefix="f64.", **kw)
    safetensors_io.write(path, [(k, np.asarray(v, dtype="<f4")) for k, v in out.items()])
    print(f"{path}: loss {losses}")


SMALL = [
    # finetune, momentum with dampening and weight decay, odd sizes; base width 4 keeps the file small
    ("finetune_w4", dict(num_classes=3, width=4, n=3, h=56, w=44, mode="finetune", seed=11, steps=3,
                         sgd=dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-3, nesterov=False),
                         store_params=False)),
    # finetune at base width 8: logits, loss and every gradient of step 0
    ("finetune_w8", dict(num_classes=2, width=8, n=2, h=32, w=40, mode="finetune", seed=12, steps=1,
                         sgd=dict(lr=0.02, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
                         store_params=False, keep_after=False)),
    # the tutorial's fixed feature extractor: only fc trains, BN statistics still move; nesterov
    ("feature_w8", dict(num_classes=2, width=8, n=4, h=40, w=40, mode="feature_extractor", seed=13, steps=3,
                        sgd=dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=1e-3, nesterov=True),
                        store_params=False)),
]

FULL = [
    ("full_finetune", dict(num_classes=2, width=64, n=4, h=224, w=224, mode="finetune", seed=21, steps=3,
                           sgd=dict(lr=0.001, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
                           store_params=True, f64=True)),
    ("full_feature", dict(num_classes=2, width=64, n=4, h=224, w=224, mode="feature_extractor", seed=22,
                          steps=3, sgd=dict(lr=0.001, momentum=0.9, dampening=0.0, weight_decay=0.0,
                                            nesterov=False), store_params=True, f64=True)),
    ("full_forward1000", dict(num_classes=1000, width=64, n=2, h=224, w=224, mode="finetune", seed=23,
                              steps=0, sgd=dict(lr=0, momentum=0, dampening=0, weight_decay=0, nesterov=False),
                              store_params=True, f64=True)),
]


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("small", "full"):
        sys.exit("usage: make_engine_fixtures.py small|full OUTDIR")
    import os
    os.makedirs(sys.argv[2], exist_ok=True)
    torch.set_num_threads(1)
    for name, kw in (SMALL if sys.argv[1] == "small" else FULL):
        make_case(os.path.join(sys.argv[2], name + ".safetensors"), **kw)


if __name__ == "__main__":
    main()
