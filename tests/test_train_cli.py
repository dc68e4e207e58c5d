"`boxrefine demo` and `boxrefine train` end to end, on a reduced size, as users run them."
import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from boxrefine.train import TrainConfig, load_checkpoint, predict_refiner


def boxrefine(*args, cwd=None, check=True):
    r = subprocess.run([shutil.which('boxrefine'), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)
    if check: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    r = boxrefine('demo', '--out', out, '--train-images', 6, '--val-images', 3, '--epochs', 3)
    return out, r


def test_demo_writes_its_artefacts(demo_run):
    out, r = demo_run
    report = json.loads((out / 'report.json').read_text())
    for key in ('noisy_iou', 'refined_iou', 'improved_fraction', 'precompute_s', 'cold_epoch_s', 'warm_epoch_s',
                'warm_vs_cold_speedup', 'data_fraction', 'cache_hit_rate_by_epoch', 'random_init', 'precision', 'device'):
        assert key in report, key
    assert report['random_init'] is True and report['precision'] == 'fp32' and report['device'] == 'cpu'
    assert report['precompute_images'] == 9              # every image extracted once, before epoch 1
    assert report['cache_hit_rate_by_epoch'] == [1.0, 1.0, 1.0]    # so every epoch reads a warm cache
    assert report['warm_vs_cold_speedup'] > 5      # the full-size demo measures the real ratio
    assert 'precompute train: 6 images to extract, about' in r.stdout   # the disk estimate comes first
    rows = list(csv.DictReader(open(out / 'metrics.csv')))
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert (out / 'loss_curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    ck = load_checkpoint(out / 'last.pt')
    assert ck['random_init'] is True and ck['epoch'] == 3 and 'scaler' in ck and 'rng' in ck
    assert 'WITHOUT pretrained weights' in r.stdout + r.stderr


def test_train_resume_and_modes(demo_run, tmp_path):
    out, _ = demo_run
    cfg = TrainConfig.load(json.loads(json.dumps(load_checkpoint(out / 'last.pt')['config'])))
    cfg['training']['num_epochs'] = 4
    cfg['output']['dir'] = str(tmp_path / 'run')
    import yaml
    (tmp_path / 'cfg.yaml').write_text(yaml.safe_dump(dict(cfg)))
    r = boxrefine('train', '--config', tmp_path / 'cfg.yaml', '--resume', out / 'last.pt', '--out', tmp_path / 'run')
    assert 'resumed from' in r.stdout and 'images to extract' not in r.stdout    # the cache is warm
    rows = list(csv.DictReader(open(tmp_path / 'run' / 'metrics.csv')))
    assert [int(r['epoch']) for r in rows] == [1, 2, 3, 4] and float(rows[-1]['cache_hit_rate']) == 1.0
    r = boxrefine('train', '--config', tmp_path / 'cfg.yaml', '--debug', '--fast', '--out', tmp_path / 'fast')
    assert 'training.batch_size 8 -> 16' in r.stdout and 'training.num_epochs 4 -> 1' in r.stdout


def test_train_bad_inputs(tmp_path):
    (tmp_path / 'typo.yaml').write_text('training:\n  batch_sise: 4\n')
    r = boxrefine('train', '--config', tmp_path / 'typo.yaml', check=False)
    assert r.returncode == 1 and "unknown config key 'training.batch_sise'" in r.stderr
    demo_cfg = Path(__file__).parents[1] / 'configs' / 'demo.yaml'
    r = boxrefine('train', '--config', demo_cfg, '--resume', tmp_path / 'nope.pt', cwd=tmp_path, check=False)
    assert r.returncode == 1 and f"checkpoint not found: {tmp_path / 'nope.pt'}" in r.stderr
    r = boxrefine('train', '--config', demo_cfg, cwd=tmp_path, check=False)   # its data has not been made here
    assert r.returncode == 1 and 'annotation file not found: boxrefine_demo/data/train.json' in r.stderr
    (tmp_path / 'zero.yaml').write_text('training:\n  num_epochs: 0\n')   # was an IndexError after precompute
    r = boxrefine('train', '--config', tmp_path / 'zero.yaml', check=False)
    assert r.returncode == 1 and f"{tmp_path / 'zero.yaml'}: training.num_epochs: must be >= 1 (got 0)" in r.stderr
    lr = demo_cfg.read_text().replace('learning_rate: 0.001', 'learning_rate: 1e-3')   # was a TypeError
    (tmp_path / 'lr.yaml').write_text(lr)
    r = boxrefine('train', '--config', tmp_path / 'lr.yaml', cwd=tmp_path, check=False)
    assert r.returncode == 1 and 'annotation file not found' in r.stderr   # the config itself is fine
    (tmp_path / 'syntax.yaml').write_text('training:\n  batch_size: 8\n   seed: 2\n')
    r = boxrefine('train', '--config', tmp_path / 'syntax.yaml', check=False)
    assert r.returncode == 1 and f"{tmp_path / 'syntax.yaml'}: line 3, column 8: not valid YAML" in r.stderr


def test_shipped_configs_load():
    root = Path(__file__).parents[1]
    assert TrainConfig.load(root / 'configs' / 'box_refinement.yaml').precision == 'auto'
    assert TrainConfig.load(root / 'configs' / 'demo.yaml').hqsam['allow_random_init'] is True


def test_predictions_of_a_run_open_in_the_viewer(demo_run):
    "The refined boxes of a finished run, reloaded from best.pt through the warm cache, match its report, and the viewer shows them."
    from boxrefine.boxes import paired_iou
    from boxrefine.train import predict_refiner
    from boxrefine.viz import BoxViewer
    out, _ = demo_run
    preds = predict_refiner(out)
    report = json.loads((out / 'report.json').read_text())
    assert len(preds) == report['val_images'] == 3
    gt = torch.tensor([b for r in preds for b in r['ground truth']])
    best = load_checkpoint(out / 'best.pt')
    refined_iou = paired_iou(torch.tensor([b for r in preds for b in r['refined']]), gt).mean().item()
    assert abs(refined_iou - best['history'][best['epoch'] - 1]['val_refined_iou']) < 1e-3
    viewer = BoxViewer.from_predictions(preds)
    assert viewer.image.value[:4] == b'\x89PNG' and 'IoU refined' in viewer.info.value
    before = viewer.image.value
    viewer.slider.value = 1
    assert viewer.image.value != before


def write_crafted_pickle(path: Path, marker: Path):
    "A .pt file that creates `marker` when it is unpickled."
    class Exploit:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({'model': Exploit(), 'epoch': 1}, path)


def test_crafted_checkpoints_run_no_code(demo_run, tmp_path):
    "A pickle given to train --resume or found in a run folder is refused, and its code never runs."
    out, _ = demo_run
    marker, crafted = tmp_path / 'pwned', tmp_path / 'crafted.pt'
    write_crafted_pickle(crafted, marker)
    cfg = TrainConfig.load(load_checkpoint(out / 'last.pt')['config'])
    (tmp_path / 'cfg.yaml').write_text(yaml.safe_dump(dict(cfg)))
    r = boxrefine('train', '--config', tmp_path / 'cfg.yaml', '--resume', crafted, '--out', tmp_path / 'run',
                  check=False)
    assert r.returncode == 1 and 'unpickling it could run code' in r.stderr, r.stderr[-2000:]
    run = tmp_path / 'shared_run'
    run.mkdir()
    shutil.copy(crafted, run / 'best.pt')
    with pytest.raises(ValueError, match='unpickling it could run code'): predict_refiner(run)
    assert not marker.exists()
