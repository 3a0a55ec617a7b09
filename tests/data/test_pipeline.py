"""data/pipeline.py: missing and empty domain folders named in the error, the training pipeline
(range, shape, determinism, augmentation), test-time loading like the original, and the output
folder check."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from ugatit_tf.common.images import to_uint8
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.train.trainer import Trainer


def test_missing_and_empty_domain_fail_naming_the_folder(tiny_dataset, tmp_path):
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, dataset="nothing_here")
    with pytest.raises(data_lib.DataError, match="nothing_here does not exist"):
        Trainer(cfg)
    root = tmp_path / "ds" / "empty"
    for d in ("trainA", "trainB"):
        (root / d).mkdir(parents=True)
    (root / "trainA" / "a.png").write_bytes(b"")  # present, so trainB is the empty one
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), dataset="empty")
    with pytest.raises(data_lib.DataError) as e:
        Trainer(cfg)
    assert str(e.value) == (f"data folder {root / 'trainB'} has no images "
                            f"(jpg, jpeg, png, bmp, gif, webp)")


def test_pipeline_range_shape_determinism_and_augmentation(tiny_dataset, tmp_path):
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, batch_size=3)
    files = data_lib.domain_files(cfg)["trainA"]
    a = [b.numpy() for b in data_lib.train_dataset(files, cfg, 7).take(4)]
    b = [b.numpy() for b in data_lib.train_dataset(files, cfg, 7).take(4)]
    c = [b.numpy() for b in data_lib.train_dataset(files, cfg, 8).take(4)]
    assert a[0].shape == (3, 32, 32, 3) and a[0].dtype == np.float32
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert min(x.min() for x in a) >= -1.0 and max(x.max() for x in a) <= 1.0
    # without augmentation every element is one of the plainly resized files
    plain_cfg = cfg.replace(augment_flag=False)
    plain = {data_lib.preprocess(data_lib.decode(f), 32, False, None).numpy().tobytes()
             for f in files}
    for batch in data_lib.train_dataset(files, plain_cfg, 1).take(3):
        for img in batch.numpy():
            assert img.tobytes() in plain
    # with augmentation, about half of the images are flipped/cropped variants
    seeds = [tf.constant([1, i], tf.int64) for i in range(40)]
    img0 = data_lib.decode(files[0])
    base = data_lib.preprocess(img0, 32, False, None).numpy()
    changed = sum(not np.array_equal(data_lib.preprocess(img0, 32, True, s).numpy(), base)
                  for s in seeds)
    assert 10 <= changed <= 30
    assert data_lib.augment_size(256) == 286 and data_lib.augment_size(128) == 143


def test_training_iterators_run_without_autotuning_and_restore_old_checkpoints(tiny_dataset,
                                                                                tmp_path):
    """The trainer's pipelines have no tuning thread (deleting an autotuned iterator joins
    it: docs/training.md, Data), give the same elements, and an iterator checkpointed with
    autotuning on (older checkpoints) restores into them exactly."""
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset)
    trainer = Trainer(cfg, log=lambda *a: None)
    assert trainer.ds_A.options().autotune.enabled is False
    assert trainer.ds_B.options().autotune.enabled is False
    plain = data_lib.train_dataset(trainer.files["trainA"], cfg, cfg.seed)
    assert plain.options().autotune.enabled is not False
    old = iter(plain)
    for _ in range(3):
        next(old)
    path = tf.train.Checkpoint(it=old).save(str(tmp_path / "it" / "ck"))
    want = [next(old).numpy() for _ in range(3)]
    new = iter(trainer.ds_A)
    tf.train.Checkpoint(it=new).restore(path).assert_consumed()
    for a in want:
        np.testing.assert_array_equal(next(new).numpy(), a)


def test_test_loading_matches_original_formula(tmp_path):
    import cv2
    rgb = (np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3)
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    x = data_lib.to_model_input(data_lib.load_rgb(path), 32)
    want = cv2.resize(rgb, (32, 32)) / 127.5 - 1
    np.testing.assert_allclose(x, want, atol=1e-6)
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.999, 1.0]), "truncate"),
                                  [0, 127, 254, 255])


def test_output_folder_check(tmp_path):
    ok = tmp_path / "a" / "b"
    assert data_lib.ensure_output_folder(str(ok), "--result_dir") == str(ok)
    assert ok.is_dir() and not os.listdir(ok)  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(data_lib.OutputError, match=r"cannot write to .*file/x \(Not a "
                                                   r"directory\): check --sample_dir"):
        data_lib.ensure_output_folder(str(tmp_path / "file" / "x"), "--sample_dir")
