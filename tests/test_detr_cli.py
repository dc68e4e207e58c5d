"`boxrefine detr` end to end on the shapes fixture: a tiny random-init model, on the CPU, as users run it."
import csv
import json
import os
import shutil
import subprocess
import time

import torch

from boxrefine.train import load_checkpoint


def boxrefine(*args, check=True):
    r = subprocess.run([shutil.which('boxrefine'), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def detr_args(fixtures, out, *extra):
    shapes = fixtures / 'shapes3'
    return ['detr', '--train-img', shapes, '--train-ann', shapes / 'gt_dataset.json', '--val-img', shapes,
            '--val-ann', shapes / 'gt_dataset.json', '--batch-size', 1, '--lr', 1e-3, '--model-size', 'tiny',
            '--image-size', 128, 192, '--allow-random-init', '--output-dir', out, *extra]


def test_detr_trains_evaluates_and_resumes(fixtures, tmp_path):
    t0 = time.perf_counter()
    r = boxrefine(*detr_args(fixtures, tmp_path, '--num-epochs', 2))
    assert time.perf_counter() - t0 < 120, 'the 2-epoch tiny run should take well under 2 minutes'
    assert 'WITHOUT pretrained weights' in r.stderr
    rows = list(csv.DictReader(open(tmp_path / 'metrics.csv')))
    assert [int(x['epoch']) for x in rows] == [1, 2]
    assert float(rows[1]['train_loss']) < float(rows[0]['train_loss'])
    assert all(0 <= float(x['val_AP']) <= 1 for x in rows) and rows[0]['random_init'] == 'True'
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['random_init'] is True and report['precision'] == 'fp32' and report['epochs'] == 2
    assert (tmp_path / 'best.pt').is_file() and (tmp_path / 'loss_curve.png').is_file()
    ck = load_checkpoint(tmp_path / 'last.pt')
    assert ck['epoch'] == 2 and ck['random_init'] is True and ck['categories']['names'] == ['cloud', 'heart', 'arrow', 'star']

    r = boxrefine(*detr_args(fixtures, tmp_path, '--num-epochs', 3, '--resume', tmp_path / 'last.pt'))
    assert 'resumed from' in r.stdout
    rows = list(csv.DictReader(open(tmp_path / 'metrics.csv')))
    assert [int(x['epoch']) for x in rows] == [1, 2, 3]


def test_detr_bad_inputs_are_clear_errors(fixtures, tmp_path):
    r = boxrefine(*detr_args(fixtures, tmp_path, '--num-epochs', 1, '--resume', tmp_path / 'missing.pt'), check=False)
    assert r.returncode == 1 and 'checkpoint not found' in r.stderr
    shapes = fixtures / 'shapes3'
    r = boxrefine('detr', '--train-img', shapes, '--train-ann', shapes / 'gt_dataset.json', '--pretrained', tmp_path / 'nothing',
                  '--output-dir', tmp_path, check=False)
    assert r.returncode == 1 and 'weights not found' in r.stderr
    r = boxrefine('detr', '--train-img', shapes, '--train-ann', tmp_path / 'none.json', '--allow-random-init',
                  '--output-dir', tmp_path, check=False)
    assert r.returncode == 1 and 'none.json' in r.stderr
    assert not (tmp_path / 'last.pt').exists()


def test_detr_resume_from_a_crafted_pickle_runs_no_code(fixtures, tmp_path):
    marker, crafted = tmp_path / 'pwned', tmp_path / 'crafted.pt'

    class Exploit:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({'model': Exploit()}, crafted)
    r = boxrefine(*detr_args(fixtures, tmp_path / 'run', '--num-epochs', 1, '--resume', crafted), check=False)
    assert r.returncode == 1 and 'unpickling it could run code' in r.stderr, r.stderr[-2000:]
    assert not marker.exists()
