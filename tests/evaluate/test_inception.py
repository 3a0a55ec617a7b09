"""evaluate/inception.py: weights resolution (no network) and the feature extractor, with
random seeded weights (weights=None: no download)."""

import hashlib
import urllib.error

import numpy as np
import pytest
from PIL import Image

from ugatit_tf.evaluate import inception as inc


def test_missing_imagenet_weights_message(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no internet (test)")

    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)

    with pytest.raises(inc.InceptionWeightsError) as info:
        inc.InceptionFeatureExtractor(weights="imagenet")
    msg = str(info.value)
    cache_path = str(keras_home / "models" / inc.INCEPTION_NOTOP_FILENAME)
    assert calls == [inc.INCEPTION_NOTOP_URL]
    assert "could not be found or downloaded" in msg
    assert cache_path in msg
    assert "Keras cache" in msg
    assert "`--inception_weights PATH`" in msg
    assert "`.h5` / `.weights.h5`" in msg
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "no internet (test)" in msg


def test_imagenet_weights_found_in_keras_cache(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    keras_home = tmp_path / "kh"
    cached = keras_home / "models" / inc.INCEPTION_NOTOP_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in weights")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(inc, "INCEPTION_NOTOP_MD5", hashlib.md5(b"stand-in weights").hexdigest())
    assert inc.imagenet_weights_cache_path() == str(cached)
    assert inc.resolve_inception_weights("imagenet") == str(cached)


def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope" / "inception.weights.h5"
    with pytest.raises(inc.InceptionWeightsError) as info:
        inc.InceptionFeatureExtractor(weights=str(missing))
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert inc.resolve_inception_weights(None) is None


# ---------------------------------------------------------------------------
# End to end with a randomly initialised InceptionV3 (no download)
# ---------------------------------------------------------------------------


def test_extractor_input_paths(extractor):
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    f8 = extractor.from_uint8(ims)
    assert f8.shape == (4, inc.FEATURE_DIM) and f8.dtype == np.float64
    assert np.all(np.isfinite(f8)) and f8.std(axis=0).max() > 0
    f11 = extractor.from_minus1_1(ims.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(f11, f8, rtol=1e-4, atol=1e-5 * np.abs(f8).max())
    np.testing.assert_array_equal(extractor(ims), f8)  # dtype dispatch
    # Mixed sizes in one call; single image on its own.
    mixed = [ims[0], np.asarray(Image.fromarray(ims[1]).resize((40, 36)))]
    assert extractor(mixed).shape == (2, inc.FEATURE_DIM)
    np.testing.assert_allclose(extractor(ims[0]), f8[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extractor.from_minus1_1(ims.astype(np.float32))
    with pytest.raises(TypeError):
        extractor.from_uint8(ims.astype(np.float32))

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside keras save_weights
def test_weights_path_round_trip_and_bad_file(extractor, tmp_path):
    # Builds two more networks (a few seconds each).
    path = tmp_path / "inception_random.weights.h5"
    extractor.model.save_weights(str(path))
    loaded = inc.InceptionFeatureExtractor(weights=str(path), batch_size=2)
    assert loaded.weights_path == str(path)
    ims = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.from_uint8(ims), extractor.from_uint8(ims), rtol=1e-6, atol=1e-7)

    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(inc.InceptionWeightsError, match="Could not load Inception weights"):
        inc.InceptionFeatureExtractor(weights=str(bad))
