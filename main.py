"""U-GAT-IT in TensorFlow 2 / Keras 3: the original's command line.

    python main.py --phase train --dataset selfie2anime
    python main.py --phase test  --dataset selfie2anime
    python main.py --phase test  --dataset selfie2anime --input my_photos/ --face_crop True
    python main.py --phase export --dataset selfie2anime --export_format all
    python main.py --phase eval  --dataset selfie2anime
    python main.py --phase check --dataset selfie2anime
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from ugatit_tf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
