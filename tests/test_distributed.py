"""torch.distributed on the CPU (gloo, 2 processes under torchrun): training matches one process with the same global
batch, sharded precompute and box generation match unsharded runs, DETR trains under torchrun."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from boxrefine.data import make_shapes_dataset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def run(*args, torchrun: int = 0, env=None, check=True):
    "`boxrefine ARGS`, or the same under `torchrun --nproc_per_node N` (gloo on loopback)."
    exe = shutil.which('boxrefine')
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(torchrun), '--master_addr', '127.0.0.1',
            '--master_port', str(free_port()), exe] if torchrun else [exe]) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    if check: assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


def metrics(folder: Path) -> list[dict]:
    return list(csv.DictReader(open(folder / 'metrics.csv')))


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(root / 'data', 8, 4, size=(160, 120), seed=1)
    return root


def config(shapes: Path, batch_size: int) -> dict:
    d = shapes / 'data'
    return {'data': {'train_ann': str(d / 'train.json'), 'train_img': str(d / 'images'), 'val_ann': str(d / 'val.json'),
                     'val_img': str(d / 'images')},
            'training': {'batch_size': batch_size, 'learning_rate': 1e-3, 'num_epochs': 4, 'seed': 0},
            'hqsam': {'model_type': 'vit_tiny', 'checkpoint': None, 'allow_random_init': True},
            'optimization': {'feature_cache': {'cache_dir': str(shapes / 'cache')}}}


def test_two_processes_train_like_one_with_the_same_global_batch(shapes):
    one, two = shapes / 'one', shapes / 'two'
    (shapes / 'one.yaml').write_text(yaml.safe_dump(config(shapes, 4)))
    (shapes / 'two.yaml').write_text(yaml.safe_dump(config(shapes, 2)))     # per process: 2 x 2 = the same global batch
    run('train', '--config', shapes / 'one.yaml', '--out', one)            # fills the shared feature cache
    r = run('train', '--config', shapes / 'two.yaml', '--out', two, torchrun=2)
    assert r.stdout.count('done: refined IoU') == 1                       # one process reports and writes
    m1, m2 = metrics(one), metrics(two)
    assert [x['epoch'] for x in m2] == ['1', '2', '3', '4']
    for a, b in zip(m1, m2):
        assert float(a['val_noisy_iou']) == pytest.approx(float(b['val_noisy_iou']), abs=1e-6)   # reduced over both shards
        assert float(a['val_refined_iou']) == pytest.approx(float(b['val_refined_iou']), abs=0.02)
        assert float(b['cache_hit_rate']) == 1.0
    assert json.loads((two / 'report.json').read_text())['processes'] == 2
    ck = torch.load(two / 'last.pt', weights_only=False)
    assert not any(k.startswith('module.') for k in ck['model'])            # loads in one process
    r = run('train', '--config', shapes / 'two.yaml', '--out', two, '--resume', two / 'last.pt', torchrun=2)
    assert 'resumed from' in r.stdout
