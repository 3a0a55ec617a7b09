#!/usr/bin/env python
"""The official PyTorch U-GAT-IT training loop as a timing peer for
`tools/benchmark.py train --peer torch`.

Runs inside a Python that has torch, torchvision, scipy and OpenCV (what the original's
UGATIT.py imports; it imports neither TensorFlow nor ugatit_tf) and imports `UGATIT` and
`parse_args` from a checkout of github znxlwm/UGATIT-pytorch given by --original. In a
temporary folder it writes a small data set of random images in the original's layout
(dataset/bench/trainA, trainB, testA, testB), builds the model with the original's defaults
for every flag it is not given (device cpu, no learning-rate decay, samples and checkpoints
never due), runs --warmup untimed iterations, and then serves timing requests on stdin, one
per line, `train RUNS`: each runs the original's `UGATIT.train()` for RUNS iterations and
answers with one JSON line on stdout, {"mode": "train", "times": [seconds per iteration],
"peak_rss_mib"}. The times are the differences of the elapsed seconds the loop itself prints
after each iteration (data, D update, G update, rho clipping). The first line written is
{"ready": true, "torch": version, "threads": n}; on a problem, one line {"error": "..."} and
exit status 2.

The one accommodation: the loop calls `iterator.next()`, a Python 2 idiom that torch's
DataLoader iterators no longer have, so `next` is made an alias of `__next__` before the
loop runs (the same iterator, the same batches).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools.benchmarking import peak_rss_mib, reset_peak_rss  # noqa: E402 (standard library only)
from tools.peer.common import answer_requests, fail, parser  # noqa: E402

DATASET = "bench"
IMAGES_PER_FOLDER = 4
ELAPSED = re.compile(r"\]\s+time:\s*([0-9.]+)")


def write_dataset(root: str, img_size: int, seed: int = 0) -> None:
    """IMAGES_PER_FOLDER random RGB PNGs of img_size + 30 pixels (the loop's resize target)
    in each of the original's four folders under root/dataset/bench."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    for folder in ("trainA", "trainB", "testA", "testB"):
        path = os.path.join(root, "dataset", DATASET, folder)
        os.makedirs(path)
        for i in range(IMAGES_PER_FOLDER):
            pixels = rng.integers(0, 256, (img_size + 30, img_size + 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(path, f"{i}.png"))


def iteration_seconds(printed: str) -> list[float]:
    """Seconds per iteration from the loop's printed lines ('[    2/    3] time: 1.2345
    d_loss: ...', elapsed since the loop started): the differences of the elapsed times."""
    elapsed = [float(m.group(1)) for m in ELAPSED.finditer(printed)]
    return [round(b - a, 4) for a, b in zip([0.0] + elapsed, elapsed)]


class TrainPeer:
    def __init__(self, gan):
        self.gan = gan

    def train(self, runs: int) -> list[float]:
        """`runs` iterations of the original's loop; their seconds."""
        if runs == 0:
            return []
        self.gan.iteration = runs
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            # its print formats the losses from tensors that require grad: a warning per run
            warnings.simplefilter("ignore", UserWarning)
            self.gan.train()
        times = iteration_seconds(printed.getvalue())
        if len(times) != runs:
            raise RuntimeError(f"the original's loop printed {len(times)} iteration times "
                               f"for {runs} iterations")
        return times

    def time(self, runs: int) -> dict:
        reset_peak_rss()
        times = self.train(runs)
        return {"mode": "train", "times": times, "peak_rss_mib": peak_rss_mib()}


def build(args) -> tuple:
    """(torch, TrainPeer) in a new temporary working folder, warm."""
    sys.path.insert(0, os.path.abspath(args.original))
    import torch
    from torch.utils.data import dataloader
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataloader._BaseDataLoaderIter.next = dataloader._BaseDataLoaderIter.__next__
    os.chdir(tempfile.mkdtemp(prefix="ugatit-torch-train-"))
    write_dataset(os.getcwd(), args.img_size)
    flags = ["--light", str(args.light), "--dataset", DATASET, "--device", "cpu",
             "--batch_size", str(args.batch), "--img_size", str(args.img_size),
             "--ch", str(args.ch), "--n_res", str(args.n_res), "--decay_flag", "False",
             "--print_freq", str(10 ** 9), "--save_freq", str(10 ** 9)]
    with contextlib.redirect_stdout(io.StringIO()):  # the original prints its settings
        from main import parse_args  # the official code, imported from its checkout
        from UGATIT import UGATIT
        sys.argv = ["main.py"] + flags
        gan = UGATIT(parse_args())
        gan.build_model()
    peer = TrainPeer(gan)
    peer.train(args.warmup)
    return torch, peer


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.original, "UGATIT.py")):
        return fail(f"--original {args.original}: no UGATIT.py (expected a checkout of "
                    f"github znxlwm/UGATIT-pytorch)")
    try:
        torch, peer = build(args)
    except ImportError as e:
        return fail(f"cannot import the PyTorch training peer: {e}")
    return answer_requests(torch, lambda mode, runs: peer.time(runs), ("train",),
                           "'train RUNS'")


if __name__ == "__main__":
    sys.exit(main())
