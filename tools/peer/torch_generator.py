#!/usr/bin/env python
"""The official PyTorch U-GAT-IT generator as a timing peer for `tools/benchmark.py --peer torch`.

Runs inside a Python that has torch (it imports neither TensorFlow nor ugatit_tf; from this
repository only the memory helpers of tools/benchmarking.py, which need the standard
library) and imports `networks.ResnetGenerator` from a checkout of github
znxlwm/UGATIT-pytorch given by --original. It builds the generator (random weights, eval
mode, batch of random images) and then serves timing requests on stdin, one per line,
`MODE RUNS`, answering each with one JSON line on stdout:
{"mode", "times": [seconds per run], "peak_rss_mib"}. MODE is `eager`, `compiled`
(torch.compile) or `compiled_bf16` (torch.compile under torch.autocast("cpu", bfloat16)); the
first request of a mode also runs --warmup untimed passes (compilation). The benchmark
interleaves these requests with its own runs, so both sides see the same machine load.
The first line written is {"ready": true, "torch": version, "threads": n}; on a problem, one
line {"error": "..."} and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools.benchmarking import peak_rss_mib, reset_peak_rss  # noqa: E402 (standard library only)
from tools.peer.common import answer_requests, fail, parser  # noqa: E402

MODES = ("eager", "compiled", "compiled_bf16")


class Peer:
    def __init__(self, torch, generator, x, warmup):
        self.torch = torch
        self.generator = generator
        self.x = x
        self.warmup = warmup
        self.functions = {}

    def function(self, mode):
        if mode not in self.functions:
            torch = self.torch
            if mode == "eager":
                fn = self.generator
            else:
                compiled = torch.compile(self.generator)
                if mode == "compiled_bf16":
                    def fn(x, compiled=compiled):
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            return compiled(x)
                else:
                    fn = compiled
            with torch.inference_mode():
                for _ in range(self.warmup):
                    fn(self.x)
            self.functions[mode] = fn
        return self.functions[mode]

    def time(self, mode, runs):
        fn = self.function(mode)
        reset_peak_rss()
        times = []
        with self.torch.inference_mode():
            for _ in range(runs):
                start = time.perf_counter()
                out = fn(self.x)[0]
                out.float().sum().item()  # the result exists (as .numpy() on our side)
                times.append(time.perf_counter() - start)
        return {"mode": mode, "times": times, "peak_rss_mib": peak_rss_mib()}


def build(args):
    sys.path.insert(0, os.path.abspath(args.original))
    import torch
    from networks import ResnetGenerator  # the official code, imported from its checkout
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = ResnetGenerator(input_nc=3, output_nc=3, ngf=args.ch, n_blocks=args.n_res,
                                img_size=args.img_size, light=args.light).eval()
    x = torch.rand(args.batch, 3, args.img_size, args.img_size) * 2 - 1
    return Peer(torch, generator, x, args.warmup)


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.original, "networks.py")):
        return fail(f"--original {args.original}: no networks.py (expected a checkout of "
                    f"github znxlwm/UGATIT-pytorch)")
    try:
        peer = build(args)
    except ImportError as e:
        return fail(f"cannot import the PyTorch peer: {e}")
    return answer_requests(peer.torch, peer.time, MODES,
                           f"'MODE RUNS', MODE one of {', '.join(MODES)}")


if __name__ == "__main__":
    sys.exit(main())
