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

from boxrefine.engine import load_checkpoint
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
        assert float(a['val_refined_iou']) == pytest.approx(float(b["val_refined_iou"]), abs=0.01)   # measured: at most 0.003
        assert float(b['cache_hit_rate']) == 1.0
    assert json.loads((two / 'report.json').read_text())['processes'] == 2
    ck = load_checkpoint(two / 'last.pt')
    assert not any(k.startswith('module.') for k in ck['model'])            # loads in one process
    five = {**config(shapes, 2)}
    five['training'] = {**five['training'], 'num_epochs': 5}
    (shapes / 'five.yaml').write_text(yaml.safe_dump(five))
    r = run('train', '--config', shapes / 'five.yaml', '--out', two, '--resume', two / 'last.pt', torchrun=2)
    assert 'resumed from' in r.stdout and [x['epoch'] for x in metrics(two)] == ['1', '2', '3', '4', '5']


def cache_entries(cache_dir: Path) -> dict[str, dict]:
    "Relative path → tensors of every entry of a feature cache."
    return {str(p.relative_to(cache_dir)): load_file(p) for p in sorted(cache_dir.rglob('*.safetensors'))}


def test_two_process_precompute_equals_one_process(fixtures, tmp_path):
    common = ['cache', 'precompute', '--images', fixtures / 'shapes3', '--allow-random-init', '--batch-size', 2]
    run(*common, '--cache-dir', tmp_path / 'one')
    r = run(*common, '--cache-dir', tmp_path / 'two', torchrun=2)
    assert r.stdout.count('"extracted": 2') == 1 and r.stdout.count('"extracted": 1') == 1   # 3 images split 2 + 1
    one, two = cache_entries(tmp_path / 'one'), cache_entries(tmp_path / 'two')
    assert len(one) == 3 and sorted(one) == sorted(two)
    for k in one:                       # same entries: same content keys and tensors; integer tensors exactly equal,
        assert one[k].keys() == two[k].keys()   # float16 features within one float16 step (float32 sums in another order)
        for t in one[k]:
            if one[k][t].is_floating_point(): torch.testing.assert_close(one[k][t], two[k][t], rtol=2 ** -10, atol=1e-5)
            else: assert torch.equal(one[k][t], two[k][t]), (k, t)


def test_sharded_boxgen_merges_to_the_unsharded_file(fixtures, tmp_path):
    split = json.loads((fixtures / 'cirr_rc2' / 'split.rc2.val.json').read_text())
    (tmp_path / 'image_splits').mkdir()
    (tmp_path / 'image_splits' / 'split.rc2.val.json').write_text(json.dumps(split))
    from PIL import Image
    for (name, rel), src in zip(list(split.items())[:9], ['img_1.jpg', 'img_2.jpg', 'img_3.jpg'] * 3):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(fixtures / 'shapes3' / src).rotate(len(name) * 7).save(tmp_path / rel)
    common = ['boxgen', '--cirr-root', tmp_path, '--method', 'saliency', '--split', 'val', '--max-images', 9]
    run(*common, '--output', tmp_path / 'whole.json')
    run(*common, '--output', tmp_path / 'sharded.json', torchrun=2)          # one shard per process
    shards = sorted(tmp_path.glob('sharded.shard-*-of-2.json'))
    assert [s.name for s in shards] == ['sharded.shard-0-of-2.json', 'sharded.shard-1-of-2.json']
    r = run('boxgen', 'merge', tmp_path / 'merged.json', *shards)
    assert '0 duplicated, 0 missing' in r.stdout
    assert (tmp_path / 'merged.json').read_bytes() == (tmp_path / 'whole.json').read_bytes()
    run(*common, '--shard', '1/3', '--min-area', 0.05, '--output', tmp_path / 'third.json')   # --shard without torchrun
    r = run('boxgen', 'merge', tmp_path / 'partial.json', shards[0], shards[0], tmp_path / 'third.shard-1-of-3.json', check=False)
    assert r.returncode == 1 and 'other parameters' in r.stderr
    r = run('boxgen', 'merge', tmp_path / 'partial.json', shards[0], shards[0])
    assert '5 duplicated, 4 missing' in r.stdout
    assert json.loads((tmp_path / 'partial.meta.json').read_text())['complete'] is False


def test_detr_trains_under_torchrun(fixtures, tmp_path):
    shapes = fixtures / 'shapes3'
    r = run('detr', '--train-img', shapes, '--train-ann', shapes / 'gt_dataset.json', '--val-img', shapes,
            '--val-ann', shapes / 'gt_dataset.json', '--batch-size', 1, '--lr', 1e-3, '--model-size', 'tiny',
            '--image-size', 128, 192, '--allow-random-init', '--num-epochs', 2, '--output-dir', tmp_path, torchrun=2)
    assert r.stdout.count('done: 2 epochs') == 1
    rows = metrics(tmp_path)
    assert [x['epoch'] for x in rows] == ['1', '2'] and all(0 <= float(x['val_AP']) <= 1 for x in rows)
    assert json.loads((tmp_path / 'report.json').read_text())['processes'] == 2
    assert not any(k.startswith('module.') for k in load_checkpoint(tmp_path / 'last.pt')['model'])
