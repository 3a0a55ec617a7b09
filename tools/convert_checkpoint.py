#!/usr/bin/env python
"""Convert a checkpoint of the original U-GAT-IT into a checkpoint of this port.

    python tools/convert_checkpoint.py --source tf1 --checkpoint PATH/UGATIT.model-1000001 \
        --dataset selfie2anime [--checkpoint_dir checkpoints] [--img_size N] [--verify]
    python tools/convert_checkpoint.py --source pytorch --checkpoint FILE.pt --dataset NAME

Prints the main.py flags that find the result (--phase test / export / train). See
docs/conversion.md for what is converted and how, and ugatit_tf/convert/ for the code.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converting computes nothing, and with oneDNN on, TensorFlow's CPU allocator keeps every
# freed buffer for reuse: the 1 GiB tensors of the full model then pile up (6.5 GB peak
# instead of about 2.5 GB, docs/conversion.md). Set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from ugatit_tf.cli import import_tensorflow  # noqa: E402

import_tensorflow(verbose=False)  # without its C++ log lines: errors stay one line

from ugatit_tf.convert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
