"""U-GAT-IT in TensorFlow 2 / Keras 3: the original's command line.

    python main.py --phase train --dataset selfie2anime
    python main.py --phase test  --dataset selfie2anime
    python main.py --phase test  --dataset selfie2anime --input my_photos/ --face_crop True
    python main.py --phase export --dataset selfie2anime --export_format all
    python main.py --phase eval  --dataset selfie2anime
    python main.py --phase check --dataset selfie2anime
"""

import sys

from ugatit_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
