"Shared pytest fixtures: the repository root and its test data folder, `tests/fixtures`."
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


@pytest.fixture(scope='session')
def root() -> Path:
    return ROOT


@pytest.fixture(scope='session')
def fixtures() -> Path:
    "`tests/fixtures` of this repository (or $BOXREFINE_FIXTURES): real data with sources and licences."
    from boxrefine.testing import fixtures_dir
    return fixtures_dir()
