"""U-GAT-IT in TensorFlow 2 / Keras 3: the original's command line.

    python main.py --phase train --dataset selfie2anime
    python main.py --phase test  --checkpoint checkpoints/UGATIT_selfie2anime_...
    python main.py --phase test  --checkpoint PATH --input my_photos/ --face_crop True
    python main.py --phase export --checkpoint PATH --export_format all
    python main.py --phase eval  --checkpoint PATH
    python main.py --phase check --dataset selfie2anime

`python main.py --help` lists every flag; `--verbose True` shows TensorFlow's own log lines.
"""

import sys

from ugatit_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
