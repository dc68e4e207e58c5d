"Shared pytest fixtures: the repository root and the shared fixtures folder."
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
    "`../shared/fixtures` beside the repository (or $BOXREFINE_FIXTURES); tests skip with a message if absent."
    path = Path(os.environ.get('BOXREFINE_FIXTURES', ROOT.parent / 'shared' / 'fixtures'))
    if not path.is_dir(): pytest.skip(f'shared fixtures not found at {path}')
    return path
