"""Shared by the evaluate tests: one InceptionV3 with random seeded weights (no download)."""

import pytest

from ugatit_tf.evaluate.inception import InceptionFeatureExtractor


@pytest.fixture(scope="module")
def extractor():
    return InceptionFeatureExtractor(weights=None, batch_size=3, seed=0)
