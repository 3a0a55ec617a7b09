"""Rehearse converting the released weights at full size (run by hand, not by pytest).

    python tests/convert/rehearse_full_size.py make FOLDER      # ~7.6 GB on disk
    /usr/bin/time -v python tools/convert_checkpoint.py --source tf1 \
        --checkpoint FOLDER/UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing \
        --checkpoint_dir OUT [--no_optimizer]
    python tests/convert/rehearse_full_size.py check FOLDER OUT

`make` writes a TF1 name-based checkpoint with the original's names and shapes for the
released configuration (full model, 256 px, ch 64, n_res 4, n_dis 6, sn) and both Adam
states, named as the release is (UGATIT.model-1000000, in the original folder name). It is
written tensor by tensor with tf.raw_ops.SaveV2 so that making it needs little memory; the
values are cheap ramps. `check` compares the largest tensor (the first MLP kernel, 1 GiB) and
a few small ones of the converted checkpoint with the source.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.reference import np_reference as R  # noqa: E402

MODEL_DIR = "UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing"
STEP = 1000000


def released_shapes() -> dict:
    shapes = {}
    for scope in ("generator_B", "generator_A"):
        shapes.update(R.tf1_generator_names(False, 64, 4, 256, scope=scope))
    for scope in ("discriminator_A", "discriminator_B"):
        shapes.update(R.tf1_discriminator_names(64, 6, sn=True, scope=scope))
    return {n: tuple(s) for n, s in shapes.items()}


def value(name: str, shape: tuple) -> np.ndarray:
    """A cheap, name-dependent float32 ramp."""
    seed = sum(name.encode()) % 1000
    flat = np.arange(int(np.prod(shape)), dtype=np.float32)
    flat *= np.float32(1e-9)
    flat += np.float32(seed * 1e-3)
    return flat.reshape(shape)


def make(folder: str) -> str:
    import tensorflow as tf

    out = os.path.join(folder, MODEL_DIR)
    os.makedirs(out, exist_ok=True)
    prefix = os.path.join(out, f"UGATIT.model-{STEP}")
    tensors = dict(released_shapes())
    for name, shape in list(tensors.items()):
        if not name.endswith("/u"):
            tensors[name + "/Adam"] = shape
            tensors[name + "/Adam_1"] = shape
    for power in ("beta1_power", "beta2_power", "beta1_power_1", "beta2_power_1"):
        tensors[power] = ()
    parts = []
    for i, name in enumerate(sorted(tensors)):
        part = f"{prefix}.part-{i}"
        v = np.float32(0.0) if name.startswith("beta") else value(name, tensors[name])
        tf.raw_ops.SaveV2(prefix=part, tensor_names=[name], shape_and_slices=[""],
                          tensors=[v])
        parts.append(part)
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix,
                                  delete_old_dirs=False)
    with open(os.path.join(out, "checkpoint"), "w") as f:  # as the original's, naming its paths
        f.write(f'model_checkpoint_path: "/home/authors/checkpoint/{MODEL_DIR}/'
                f'UGATIT.model-{STEP}"\n')
    print(f"wrote {prefix}: {len(tensors)} tensors")
    return prefix


def check(folder: str, out: str) -> None:
    import tensorflow as tf

    converted = tf.train.latest_checkpoint(os.path.join(out, MODEL_DIR))
    reader = tf.train.load_checkpoint(converted)
    shapes = reader.get_variable_to_shape_map()
    big = [k for k, s in shapes.items() if s == [1048576, 256]]
    want = value("generator_B/MLP/linear_0/dense/kernel", (1048576, 256))
    matches = [k for k in big if np.array_equal(reader.get_tensor(k), want)]
    print(f"{converted}: {len(shapes)} tensors; {len(big)} of shape [1048576, 256], "
          f"{len(matches)} equal to generator_B/MLP/linear_0/dense/kernel: {matches}")
    assert len(matches) == 1


if __name__ == "__main__":
    {"make": lambda: make(sys.argv[2]), "check": lambda: check(sys.argv[2], sys.argv[3])}[
        sys.argv[1]]()
