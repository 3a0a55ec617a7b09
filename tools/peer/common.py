"""What the PyTorch peers (torch_generator.py, torch_train.py) share: their command line,
their answer to a problem and their loop of timing requests. Standard library only: this runs
in the torch Python."""

from __future__ import annotations

import argparse
import json
import os
import sys


def fail(message: str) -> int:
    """One JSON line {"error": message} on stdout; returns exit status 2."""
    print(json.dumps({"error": message}), flush=True)
    return 2


def parser(description: str) -> argparse.ArgumentParser:
    """The peers' flags: the checkout of the original, the model's size, batch, threads and
    untimed warm-up runs (the benchmark passes the config it times on our side)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--original", required=True, help="checkout of znxlwm/UGATIT-pytorch")
    p.add_argument("--img_size", type=int, required=True)
    p.add_argument("--ch", type=int, required=True)
    p.add_argument("--n_res", type=int, required=True)
    p.add_argument("--light", action="store_true")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=2)
    return p


def answer_requests(torch, time, modes, usage: str) -> int:
    """The ready line ({"ready": true, "torch": version, "threads": n}), then one JSON line
    `time(mode, runs)` per stdin request `MODE RUNS` (MODE one of `modes`); on a bad request,
    fail(... expected `usage`). Returns the exit status."""
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 2 or parts[0] not in modes or not parts[1].isdigit():
            return fail(f"bad request {line.strip()!r}: expected {usage}")
        print(json.dumps(time(parts[0], int(parts[1]))), flush=True)
    return 0
