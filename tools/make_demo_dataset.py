#!/usr/bin/env python
"""Generate the procedural selfie -> anime demo data set.

    python tools/make_demo_dataset.py [--out datasets/demo] [--size 128]
                                      [--n_train 300] [--n_test 40] [--seed 0]

See tools/demo_data.py for what is drawn; the same arguments always give
byte-identical files.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.demo_data import DemoFolderError, generate_demo_dataset  # noqa: E402
from ugatit_tf.cli import Parser  # noqa: E402  (one-line errors)


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="datasets/demo", help="output folder (default: datasets/demo)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    p.add_argument("--n_train", type=int, default=300, help="images per training domain (default: 300)")
    p.add_argument("--n_test", type=int, default=40, help="images per test domain (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    if a.size < 16 or a.n_train < 0 or a.n_test < 0:
        p.error("--size must be >= 16 and the counts >= 0")
    if not a.out.strip():
        p.error("--out must name a folder (it is created; an existing one must hold only a "
                "demo set)")
    try:
        counts = generate_demo_dataset(a.out, size=a.size, n_train=a.n_train,
                                       n_test=a.n_test, seed=a.seed, progress=not a.quiet)
    except DemoFolderError as e:
        p.error(f"--out {e}")
    except OSError as e:  # under a file, or not writable
        p.error(f"--out {a.out}: cannot write there ({e.strerror or e})")
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
