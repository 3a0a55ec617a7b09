#!/usr/bin/env python
"""Speed benchmark of U-GAT-IT on synthetic data (no data set needed).

    python tools/benchmark.py infer --configs light:256:64:4 --json
    python tools/benchmark.py train --json \
        --configs light:64:16:4,light:64:32:4,light:128:32:4,light:256:64:4
    python tools/benchmark.py train --configs light:256:64:4 --mixed_precision mixed_bfloat16
    python tools/benchmark.py tflite --configs light:256:64:4 --json

Prints a table (seconds min/median/max, GFLOP, GFLOP/s, fraction of the measured conv2d
peak, peak resident memory, load average) and, last, a line `JSON: {...}`. See
tools/benchmarking.py and docs/speed.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.benchmarking import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
