"""Shared fixtures: where the real models are (``SQUEEZEFORGE_MODELS``), and the demo image."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

MODELS_ENV = "SQUEEZEFORGE_MODELS"


def models_dir() -> Path | None:
    d = os.environ.get(MODELS_ENV)
    return Path(d) if d and Path(d).is_dir() else None


@pytest.fixture
def models() -> Path:
    d = models_dir()
    if d is None:
        pytest.skip(f"{MODELS_ENV} is not set to a folder of real SqueezeNet weights")
    return d


@pytest.fixture
def demo_image() -> Path:
    from squeezeforge.quant.preprocess import default_image
    return default_image()
