"""train/trainer.py: a tiny training that learns, determinism, exact resume, other gan types
and the pytorch variant, TensorBoard scalars, samples and the loss curve at every checkpoint."""

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, tiny_config
from ugatit_tf.model.checkpoints import CheckpointError
from ugatit_tf.train.loss_curve import CSV_NAME, PNG_NAME
from ugatit_tf.train.trainer import Trainer, learning_rate

RUN = dict(epoch=1, iteration=8, print_freq=4, save_freq=4)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_training_cycle_and_identity_losses_fall(tiny_dataset, tmp_path):
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN).replace(
        iteration=40, lr=1e-3, print_freq=40, save_freq=40)
    trainer = Trainer(cfg, log=lambda *a: None)
    history = trainer.train(progress=False)["history"]["losses"]
    losses = [h["G_A_cycle"] + h["G_B_cycle"] + h["G_A_identity"] + h["G_B_identity"]
              for h in history]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    assert np.isfinite(losses).all()
    # the rho constraint held through training
    for v in trainer.g_vars:
        if v.path.endswith("rho"):
            assert 0.0 <= v.numpy().min() and v.numpy().max() <= 1.0


# tests/conftest.py turns Grappler off and hides TensorFlow's errors: this runs apart
FUSION_SCRIPT = """
import tempfile
from tools.benchmarking import make_config, synthetic_datasets
from ugatit_tf.train.trainer import Trainer
cfg = make_config("light:32:4:2", checkpoint_dir=tempfile.mkdtemp())
Trainer(cfg, log=print, datasets=synthetic_datasets(cfg)).run_iteration(0)
print("iteration done")
"""


@pytest.mark.slow
def test_discriminator_convolutions_fuse_without_remapper_errors():
    """With batches of fully known shape (here tools/benchmarking.py's synthetic data; the
    file pipeline leaves the batch size open), Grappler's remapper fuses each discriminator
    Conv + BiasAdd + LeakyReLU. With LeakyReLU's usual gradient (it reads the pre-activation)
    it abandoned the rewrite part-way, logging "remapper failed", and which layers ended up
    fused, and so the weights' last bits, changed between processes."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", FUSION_SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "iteration done" in res.stdout, res.stderr[-2000:]
    assert "remapper failed" not in res.stderr, res.stderr[-2000:]


def _first_iterations(train_kernels, iterations=1, **changes):
    import tensorflow as tf
    from tools.benchmarking import make_config, synthetic_datasets
    cfg = make_config("light:64:16:2", n_dis=5, train_kernels=train_kernels, **changes)
    trainer = Trainer(cfg, log=lambda *a: None, datasets=synthetic_datasets(cfg))
    graph = trainer.d_step.get_concrete_function(
        next(iter(trainer.ds_A)), next(iter(trainer.ds_B)), tf.constant(1e-4)).graph
    convolutions = sum(1 for op in graph.get_operations() if op.type == "Conv2D"
                       and re.search(r"/global(_\d+)?/conv_last(_\d+)?/", op.name))
    return [trainer.run_iteration(it)[0] for it in range(iterations)], convolutions


@pytest.mark.slow
def test_fast_train_kernels_train_the_same_model(tmp_path):
    """--train_kernels fast computes the same losses as the reference kernels from the same
    weights and data, up to float32 rounding (the first D losses come from the initial
    weights; the G losses after one D update), with the global discriminators' last
    convolution as a matrix product in the D update (no Conv2D)."""
    reference, convolutions = _first_iterations("reference", checkpoint_dir=str(tmp_path / "r"))
    fast, none = _first_iterations("fast", checkpoint_dir=str(tmp_path / "f"))
    assert convolutions == 2 and none == 0
    for want, got in zip(reference, fast):
        assert want.keys() == got.keys()
        for name in want:
            assert np.isclose(got[name], want[name], rtol=1e-4, atol=1e-6), (name, got, want)


@pytest.mark.slow
def test_fast_train_kernels_with_penalty_pytorch_variant(tmp_path):
    """The fast kernels in the gradient penalty's discriminator calls (wgan-gp) in the
    pytorch variant (plain instance norms, one D call per batch): the reference kernels'
    first losses up to float32 rounding. (bfloat16 maps: the instance norm's test in
    tests/model/test_networks.py.)"""
    changes = dict(variant="pytorch", gan_type="wgan-gp")
    reference, _ = _first_iterations("reference", checkpoint_dir=str(tmp_path / "r"), **changes)
    fast, _ = _first_iterations("fast", checkpoint_dir=str(tmp_path / "f"), **changes)
    for name, want in reference[0].items():
        assert np.isfinite(fast[0][name])
        assert np.isclose(fast[0][name], want, rtol=1e-4, atol=1e-4), name


def _kernel_shaped_inputs(op, shape):
    return sum(1 for t in op.inputs if t.shape.as_list() == shape)


def test_full_mlp_kernel_gradient_is_formed_two_terms_at_a_time(tmp_path):
    """The full generator's first MLP kernel (1 GiB at 256 px) gets its gradient from
    model/deferred_gradients.py: no op of the G update takes more than two kernel-sized
    tensors (autodiff summed the penalty's term and both calls' products of genA2B in one
    AddN, all held until the last arrived), and the products are formed after the backward
    pass (a control input). Bit for bit the same gradients as autodiff's with Grappler on:
    test_deferred_gradients_equal_autodiff_with_grappler."""
    import tensorflow as tf
    from tools.benchmarking import make_config, synthetic_datasets
    cfg = make_config("full:32:4:2", checkpoint_dir=str(tmp_path))
    trainer = Trainer(cfg, log=lambda *a: None, datasets=synthetic_datasets(cfg))
    shape = trainer.nets.genA2B.mlp.linear_0.kernel.shape
    A, B = next(trainer.iter_A), next(trainer.iter_B)
    graph = trainer.g_step.get_concrete_function(A, B, tf.constant(1e-4)).graph
    ops = graph.get_operations()
    # (the optimizer's IdentityN passes every gradient through: it holds, it computes nothing)
    assert max(_kernel_shaped_inputs(op, list(shape)) for op in ops
               if op.type != "IdentityN") == 2
    products = [op for op in ops if op.type == "MatMul" and op.outputs[0].shape == shape]
    assert len(products) == 3  # genA2B twice, genB2A once
    assert all(op.control_inputs for op in products)
    # the second kernel's gradient is begun after the first kernel's Adam update
    after_update = [op for op in ops if op.outputs and op.outputs[0].shape == shape
                    and any(c.type == "ResourceApplyAdam" for c in op.control_inputs)]
    assert after_update


@pytest.mark.slow
def test_deferred_kernels_applied_one_at_a_time_give_the_same_step(tmp_path, monkeypatch):
    """The G update that applies each deferred kernel after the others (one replica, no
    loss scaling) leaves the weights, Adam slots and step counter that one apply_gradients
    of every gradient leaves (the path of several replicas and of loss scaling)."""
    import tensorflow as tf
    from tools.benchmarking import make_config, synthetic_datasets
    from ugatit_tf.train import trainer as trainer_module

    def all_at_once(optimizer, deferred, variables, grads, source_grads):
        optimizer.apply_gradients(zip(deferred.gradients(variables, grads, source_grads),
                                      variables))

    cfg = make_config("full:32:4:2", checkpoint_dir=str(tmp_path))
    trainer = Trainer(cfg, log=lambda *a: None, datasets=synthetic_datasets(cfg))
    A, B = next(trainer.iter_A), next(trainer.iter_B)
    state = [v for m in trainer.nets.generators + trainer.nets.discriminators
             for v in m.variables] + list(trainer.g_optim.variables)
    start = [v.numpy() for v in state]
    after = []
    for apply in (all_at_once, trainer_module._apply_then_deferred):
        for v, x in zip(state, start):
            v.assign(x)
        monkeypatch.setattr(trainer_module, "_apply_then_deferred", apply)
        trainer._g_update = trainer._replicated_update(trainer.g_optim, trainer.g_vars,
                                                       trainer._g_losses)
        tf.function(trainer._g_step)(A, B, tf.constant(1e-4))
        after.append([v.numpy() for v in state])
    assert int(trainer.g_optim.iterations) == 1
    for v, x, y in zip(state, *after):
        np.testing.assert_array_equal(x, y, err_msg=v.path)


# the G update's gradients with and without the deferral, in one process with Grappler on
DEFERRAL_SCRIPT = """
import tempfile
import numpy as np
import tensorflow as tf
from tools.benchmarking import make_config, synthetic_datasets
from ugatit_tf.model import deferred_gradients as dg
from ugatit_tf.train.trainer import Trainer
cfg = make_config("full:32:4:2", checkpoint_dir=tempfile.mkdtemp())
trainer = Trainer(cfg, log=print, datasets=synthetic_datasets(cfg))
A, B = next(trainer.iter_A), next(trainer.iter_B)
state = [v.numpy() for m in trainer.nets.generators + trainer.nets.discriminators
         for v in m.variables]
variables = trainer.g_vars

def gradients(defer):
    for m in trainer.nets.generators + trainer.nets.discriminators:
        for v in m.variables:
            v.assign(state.pop(0)); state.append(v.numpy())
    @tf.function
    def step(a, b):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in variables])
            deferred = dg.DeferredKernelGradients(variables if defer else [], tape)
            with dg.recording(deferred):
                total, _ = trainer._g_losses(a, b)
        grads = tape.gradient(total, variables + deferred.sources())
        return deferred.gradients(variables, grads[:len(variables)], grads[len(variables):])
    return [g.numpy() for g in step(A, B)]
plain, deferred = gradients(False), gradients(True)
print("differ:", [v.path for v, a, b in zip(variables, plain, deferred)
                  if not np.array_equal(a, b)])
"""


@pytest.mark.slow
def test_deferred_gradients_equal_autodiff_with_grappler():
    """Training runs with Grappler, whose arithmetic optimizer sorts a sum's inputs by name:
    autodiff's sum for the full MLP kernel becomes penalty + first call + second call, the
    order model/deferred_gradients.py keeps. (This test process runs without Grappler, where
    autodiff sums in the tape's order: the same terms, other last bits.)"""
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", DEFERRAL_SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "differ: []" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.mark.slow
def test_resume_continues_exactly(tiny_dataset, tmp_path):
    """6 iterations in one go equal 4 + (new process state) 2, with lr, optimizer slots and
    data position restored; the same seed gives the same losses and sample images. The loss
    curve's csv, written at every checkpoint, holds iterations 1-4 after the first part and
    1-6 after the resumed one, each row exactly the losses train() returned for that
    iteration; TensorBoard has every loss, lr, rho and the samples."""
    kw = dict(RUN, dataset_dir=tiny_dataset, iteration=3, epoch=2, save_freq=100,
              print_freq=100, decay_epoch=1)
    full = Trainer(tiny_config(tmp_path / "full", **kw), log=lambda *a: None)
    full_out = full.train(progress=False)

    first = Trainer(tiny_config(tmp_path / "split", **kw), log=lambda *a: None)
    first_out = first.train(max_iterations=4, progress=False)
    assert first_out["history"] == {k: v[:4] for k, v in full_out["history"].items()}
    samples = [tmp_path / run / "samples" / full.config.model_dir for run in ("full", "split")]
    assert sorted(os.listdir(samples[1])) == [PNG_NAME, CSV_NAME, "sample_0000004.png"]
    assert _csv_rows(samples[1])[-1]["step"] == "4"
    first.save()
    messages = []
    second = Trainer(tiny_config(tmp_path / "split", **kw), log=messages.append)
    second_out = second.train(progress=False)
    assert second_out["start"] == 4
    assert any("Resumed from" in m and "at iteration 4" in m for m in messages), messages
    assert second_out["history"]["Generator_loss"] == full_out["history"]["Generator_loss"][4:]
    assert second_out["last"]["lr"] == full_out["last"]["lr"] == pytest.approx(
        learning_rate(second.config, 5), rel=1e-6)
    assert int(second.g_optim.iterations) == int(full.g_optim.iterations) == 6
    for a, b in zip(full.g_optim.variables, second.g_optim.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    for a, b in zip(full.nets.disA.variables, second.nets.disA.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # samples at the end of each train(): the resumed run's last one is the full run's
    assert sorted(os.listdir(samples[1])) == [PNG_NAME, CSV_NAME, "sample_0000004.png",
                                              "sample_0000006.png"]
    assert (samples[0] / "sample_0000006.png").read_bytes() == \
        (samples[1] / "sample_0000006.png").read_bytes()
    rows = _csv_rows(samples[1])
    history = first_out["history"]["losses"] + second_out["history"]["losses"]
    assert [int(row["step"]) for row in rows] == list(range(1, 7))
    for row, losses in zip(rows, history):
        assert row["iterations"] == "1"
        assert {k: float(v) for k, v in row.items() if k not in ("step", "iterations")} == \
            losses
    _assert_tensorboard_scalars(os.path.join(second.config.log_dir, second.config.model_dir))


def _csv_rows(folder):
    with open(os.path.join(folder, CSV_NAME)) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_with_other_architecture_names_the_flag(tiny_dataset, tmp_path):
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN).replace(iteration=1)
    Trainer(cfg, log=lambda *a: None).save()  # a checkpoint of the untrained model
    # --ch is not part of the folder name (as in the original), so the folder is shared
    with pytest.raises(CheckpointError, match=r"trained with --ch 4 \(you gave 8\); pass the "):
        Trainer(cfg.replace(ch=8), log=lambda *a: None).train(progress=False)


@pytest.mark.slow
def test_config_json_is_kept_by_runs_that_fail_or_have_nothing_to_do(tiny_dataset, tmp_path):
    """config.json is written with a checkpoint only: a resume with another --img_size or
    --batch_size (whose saved data position holds other batches) is refused naming the flag,
    a finished run has nothing to do, a start that fails writes nothing; the flags in
    config.json stay those of the checkpoint each time."""
    import json
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN).replace(iteration=1, epoch=1)
    folder = os.path.join(cfg.checkpoint_dir, cfg.model_dir)
    Trainer(cfg, log=lambda *a: None).train(progress=False)
    saved = open(os.path.join(folder, "config.json")).read()
    for changes, message in ((dict(img_size=36), "--img_size 32 (you gave 36)"),
                             (dict(batch_size=2), "--batch_size 1 (you gave 2)")):
        with pytest.raises(CheckpointError) as e:
            Trainer(cfg.replace(**changes), log=lambda *a: None).train(progress=False)
        assert f"it was trained with {message}, and its data pipeline's position" in \
            str(e.value)
        assert open(os.path.join(folder, "config.json")).read() == saved
    out = Trainer(cfg.replace(lr=0.5), log=lambda *a: None).train(progress=False)
    assert out["last"] == {} and json.loads(saved)["lr"] != 0.5
    assert open(os.path.join(folder, "config.json")).read() == saved
    fresh = cfg.replace(checkpoint_dir=str(tmp_path / "ck2"), sample_dir=str(tmp_path / "f"))
    (tmp_path / "f").write_text("a file where the samples go")
    with pytest.raises(Exception, match="--sample_dir"):
        Trainer(fresh, log=lambda *a: None).train(progress=False)
    assert not os.path.exists(os.path.join(fresh.checkpoint_dir, fresh.model_dir,
                                           "config.json"))


@pytest.mark.slow
def test_batch_size_two_hinge_and_pytorch_variant(tiny_dataset, tmp_path):
    """(wgan-gp, the tf1 variant and a batch of two: tests/train/test_distribute.py's
    one-device run)"""
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, **RUN).replace(
        iteration=1, batch_size=2, gan_type="hinge", variant="pytorch")
    out = Trainer(cfg, log=lambda *a: None).train(progress=False)["last"]
    assert np.isfinite(list(out.values())).all()


def _assert_tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(folder, size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for tag in ("Generator_loss", "Discriminator_loss", "G_A_loss", "G_A_gan", "G_A_cycle",
                "G_A_identity", "G_A_cam", "G_B_cam", "D_A_loss", "D_B_loss", "lr", "samples"):
        assert tag in tags, tag
    assert any(t.endswith("rho_mean") for t in tags)
