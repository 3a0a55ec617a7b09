"""config.py: the checks of Config.validate (each message names the flag), the smallest image
a discriminator depth allows, and the checkpoint folder names of the original."""

import pytest

from tests.conftest import tiny_config
from ugatit_tf.config import Config, ConfigError, min_img_size
from ugatit_tf.model.networks import build_discriminator


def test_too_small_image_names_minimum():
    with pytest.raises(ConfigError) as e:
        Config(img_size=64, n_dis=6).validate()
    assert str(e.value).startswith("--img_size 64 is too small for --n_dis 6")
    assert "Use --img_size >= 96" in str(e.value)
    assert min_img_size(6, "tf1") == 96
    Config(img_size=96, n_dis=6).validate()
    Config(img_size=32, n_dis=4).validate()
    # the size the check accepts really works, the one below really fails
    build_discriminator(tiny_config(img_size=96, n_dis=6), "discriminator_A")


def test_pytorch_minimum_size():
    assert min_img_size(6, "pytorch") == 96
    with pytest.raises(ConfigError, match="--img_size 64 is too small"):
        Config(img_size=64, variant="pytorch").validate()


@pytest.mark.parametrize("kw,msg", [
    (dict(img_size=30), "--img_size must be a multiple of 4"),
    (dict(ch=0), "--ch must be a whole number >= 1"),
    (dict(n_dis=3), "--n_dis must be >= 4"),
    (dict(gan_type="wgan"), "--gan_type must be one of"),
    (dict(variant="jax"), "--variant must be one of"),
    (dict(img_ch=1), "--img_ch must be 3"),
    (dict(n_res=-1), "--n_res must be a whole number >= 0"),
    (dict(lr=-1.0), "--lr must be a finite number >= 0"),
])
def test_bad_config_values(kw, msg):
    with pytest.raises(ConfigError) as e:
        Config(**kw).validate()
    assert str(e.value).startswith(msg)


def test_validate_checks_every_choice_field():
    for name in ("direction", "fallback", "export_format", "quantize", "train_kernels"):
        with pytest.raises(ConfigError, match=f"^--{name} must be one of "):
            Config(**{name: "nonsense"}).validate()


def test_model_dir_like_original():
    assert Config(dataset="selfie2anime").model_dir == \
        "UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing"
    assert Config(dataset="x", light=True, sn=False, smoothing=False,
                  variant="pytorch").model_dir == \
        "UGATIT_light_x_lsgan_4resblock_6dis_1_1_10_10_1000_pytorch"


def test_min_img_size_matches_a_step_by_step_search_and_ends_for_any_n_dis():
    from ugatit_tf.config import discriminator_size_problem, min_img_size

    def step_by_step(n_dis, variant):  # the definition: the first multiple of 4 that fits
        size = 8
        while discriminator_size_problem(size, n_dis, variant):
            size += 4
        return size

    for variant in ("tf1", "pytorch"):
        for n_dis in range(4, 11):
            assert min_img_size(n_dis, variant) == step_by_step(n_dis, variant)
    with pytest.raises(ConfigError) as e:  # the step-by-step search never ended here
        Config(n_dis=40).validate()
    assert str(e.value).endswith(f"Use --img_size >= {min_img_size(40, 'tf1')} or a smaller "
                                 f"--n_dis.")
    assert not discriminator_size_problem(min_img_size(40, "tf1"), 40, "tf1")
    assert discriminator_size_problem(min_img_size(40, "tf1") - 4, 40, "tf1")
