#!/usr/bin/python3
"""The engine benchmark's work timed with PyTorch (run with /usr/bin/python3).

    bench/torch_engine.py [threads] [repetitions]

Prints the same "key value" lines as engine_bench (medians, seconds).
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
from torchvision.models import resnet18


def timed(fn, reps, key):
    """Median wall seconds; also prints cpu_KEY, the main thread's CPU seconds."""
    fn()
    fn()
    ts, cs = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.thread_time() - c0)
    print(f"cpu_{key} {statistics.median(cs):.6f}")
    return statistics.median(ts)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x = torch.rand(4, 3, 224, 224) * 2 - 1
    y = torch.tensor([0, 1, 1, 0])
    crit = nn.CrossEntropyLoss()
    print(f"threads {threads}\nrepetitions {reps}")

    model = resnet18(num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    print(f"train_step_finetune {timed(step, reps, 'train_step_finetune'):.6f}")

    fe = resnet18(num_classes=2)
    for p in fe.parameters():
        p.requires_grad_(False)
    fe.fc = nn.Linear(512, 2)
    opt2 = torch.optim.SGD(fe.fc.parameters(), lr=0.001, momentum=0.9)
    fe.train()

    def step2():
        opt2.zero_grad()
        crit(fe(x), y).backward()
        opt2.step()
    print(f"train_step_feature_extractor {timed(step2, reps, 'train_step_feature_extractor'):.6f}")

    model.eval()
    with torch.no_grad():
        m = timed(lambda: model(x), reps, "forward_b4")
        print(f"forward_b4 {m:.6f}")
        print(f"forward_gflops {4 * 3.63 / m:.1f}")
        x1 = x[:1].contiguous()
        print(f"predict_1 {timed(lambda: torch.softmax(model(x1), 1), reps, 'predict_1'):.6f}")


if __name__ == "__main__":
    main()
