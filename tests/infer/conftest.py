"""Fixtures of the infer tests: the astronaut photo and one face detector per file."""

import pytest
from skimage import data

from ugatit_tf.infer import faces as F


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return F.FaceDetector()
