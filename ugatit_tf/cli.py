"""Command line of main.py: the original's flags, then one function per phase."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ugatit_tf.config import Config, ConfigError, add_config_flags, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Tensorflow 2 / Keras 3 implementation of U-GAT-IT",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(parser)
    return parser


def parse_config(argv=None) -> Config:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args)
    try:
        config.validate()
    except ConfigError as e:
        parser.error(str(e))
    return config


def print_info(config: Config) -> None:
    print("##### Information #####")
    for name in ("variant", "light", "gan_type", "dataset", "batch_size", "epoch", "iteration",
                 "smoothing", "n_res", "n_dis", "n_critic", "sn", "adv_weight", "cycle_weight",
                 "identity_weight", "cam_weight", "img_size", "ch"):
        print(f"# {name} : {getattr(config, name)}")
    print()


def phase_train(config: Config) -> int:
    from ugatit_tf.train.trainer import Trainer
    trainer = Trainer(config)
    result = trainer.train()
    if result.get("interrupted") and result["end"] < trainer.total_iterations:
        # the trainer said where the checkpoint is; a non-zero status tells schedulers the
        # run is not finished (130 for SIGINT, 143 for SIGTERM, as if killed by the signal)
        return 128 + int(signal.Signals[result["interrupted"]])
    last = result["last"]
    if last:
        print(f" [*] Training finished at iteration {result['end']}: "
              f"d_loss {last['Discriminator_loss']:.4f}, g_loss {last['Generator_loss']:.4f}")
    else:
        print(f" [*] Nothing to do: already trained for {result['end']} iterations")
    return 0


def phase_test(config: Config) -> int:
    if config.input:
        return phase_photos(config)
    from ugatit_tf.infer.test_phase import run_test
    run_test(config)
    return 0


def phase_photos(config: Config) -> int:
    import tensorflow as tf

    from ugatit_tf.model.checkpoints import load_networks
    from ugatit_tf.infer.photos import translate_paths

    nets, prefix = load_networks(config)
    print(f" [*] Loaded {prefix}")
    model = nets.genA2B if config.direction == "a2b" else nets.genB2A
    fn = tf.function(lambda x: model(x))

    def translate(batch):
        image, _, heatmap = fn(tf.convert_to_tensor(batch, tf.float32))
        return image.numpy(), heatmap.numpy()

    output = config.output or os.path.join(config.result_dir, config.model_dir, "photos")
    try:
        summary = translate_paths(config.input, output, translate, img_size=config.img_size,
                                  face_crop=config.face_crop, paste_back=config.paste_back,
                                  fallback=config.fallback)
    except ValueError as e:  # bad --input / --output (nothing was written)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.n_failed == 0 else 1


def phase_export(config: Config) -> int:
    from ugatit_tf.export.run import export_models
    paths = export_models(config, export_dir=config.export_dir,
                          export_format=config.export_format, quantize=config.quantize,
                          version=config.version)
    for kind, path in sorted(paths.items()):
        print(f" [*] {kind}: {path}")
    return 0


def phase_eval(config: Config) -> int:
    from ugatit_tf.evaluate.run import run_eval
    run_eval(config)
    return 0


def phase_check(config: Config) -> int:
    """Scan trainA, trainB, testA, testB with PIL and print what training would do with each
    file; exit 0 if training can proceed, 1 if a training folder has no usable image."""
    from ugatit_tf.data.check import check_dataset
    report = check_dataset(config)
    print(report.text())
    return 0 if report.usable else 1


PHASES = {"train": phase_train, "test": phase_test, "export": phase_export,
          "eval": phase_eval, "check": phase_check}


def user_errors() -> tuple:
    """Exceptions that mean "the input or the flags are wrong": one clear line, no traceback."""
    from ugatit_tf.model.checkpoints import CheckpointError
    from ugatit_tf.data.check import DataError
    errors = [ConfigError, DataError, CheckpointError]
    for module, name in (("export.saved_model", "ExportError"),
                         ("evaluate.inception", "InceptionWeightsError"),
                         ("infer.photos", "NoFaceError"), ("infer.faces", "ImageLoadError")):
        try:
            mod = __import__(f"ugatit_tf.{module}", fromlist=[name])
            errors.append(getattr(mod, name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv=None) -> int:
    config = parse_config(argv)
    print_info(config)
    errors = user_errors()
    try:
        return PHASES[config.phase](config)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
