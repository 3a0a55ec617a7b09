"""A small light demo checkpoint written without training, for the command-line tests."""

import os

from ugatit_tf.config import Config

DEMO = dict(dataset="demo", light=True, img_size=64, ch=16, n_dis=5)


def write_demo_checkpoint(checkpoint_dir: str, **changes) -> str:
    """Write checkpoint_dir/MODEL_DIR/{config.json, checkpoint, ckpt-1.*} of freshly built
    networks (weights from seed 0); returns the folder."""
    import tensorflow as tf

    from ugatit_tf.model.checkpoints import make_checkpoint, write_config
    from ugatit_tf.model.networks import Networks
    config = Config(checkpoint_dir=checkpoint_dir, **{**DEMO, **changes})
    folder = os.path.join(checkpoint_dir, config.model_dir)
    nets = Networks(config, discriminators=False)
    manager = tf.train.CheckpointManager(make_checkpoint(nets), folder, max_to_keep=1)
    manager.save(checkpoint_number=1)
    write_config(folder, config)
    return folder
