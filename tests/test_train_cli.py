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

from boxrefine.config import TrainConfig
from boxrefine.engine import load_checkpoint
from boxrefine.refiner import predict_refiner


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
    gate = json.loads((out / 'gate.json').read_text())        # calibrated before refining
    assert report['gate']['margin'] == gate['margin'] and gate['checkpoint'] == 'best.pt'
    assert f"gate margin {gate['margin']}" in r.stdout or 'gate closed' in r.stdout
    refined = json.loads((out / 'refined_val.report.json').read_text())
    assert refined['gate_margin'] == gate['margin']            # refine used the calibrated gate


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
    assert (tmp_path / 'run' / 'gate.json').is_file()          # train calibrates on its val set
    assert 'calibrated on the validation set' in r.stdout
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


def test_old_scripts_config_trains(demo_run, tmp_path):
    "A config in the old scripts' layout trains: each old key is read as what it means here, and said so."
    out, _ = demo_run
    cfg = load_checkpoint(out / 'last.pt')['config']
    cache = cfg['optimization'].pop('feature_cache')
    cfg['training'] |= {'batch_size': 4, 'num_epochs': 1, 'use_amp': False,
                        'feature_cache': {k: cache[k] for k in ('enabled', 'cache_dir', 'auto_detect')}}
    cfg['optimization']['performance'] = {'use_amp': False, 'batch_size_multiplier': 2, 'data_sampling': True}
    cfg['hqsam']['checkpoint_path'] = cfg['hqsam'].pop('checkpoint')
    old = tmp_path / 'box_refinement_config.yaml'
    old.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = boxrefine('train', '--config', old, '--out', tmp_path / 'run')
    assert [line for line in r.stdout.splitlines() if ': old key ' in line] == [f"{old}: old key {m}" for m in [
        'training.feature_cache.enabled -> optimization.feature_cache.enabled',
        'training.feature_cache.cache_dir -> optimization.feature_cache.cache_dir',
        'training.feature_cache.auto_detect -> optimization.feature_cache.auto_detect',
        'hqsam.checkpoint_path -> hqsam.checkpoint',
        'optimization.performance.use_amp -> training.use_amp (no mixed precision)',
        'optimization.performance.batch_size_multiplier 2 -> training.batch_size 4 x 2 = 8',
        'optimization.performance.data_sampling true -> data.sample_ratio 1.0 (the sub-sampling ratio)']]
    assert 'images to extract' not in r.stdout          # the old key's cache_dir was used: the demo's warm cache
    run = load_checkpoint(tmp_path / 'run' / 'last.pt')['config']
    assert run['training']['batch_size'] == 8 and run['optimization']['feature_cache']['cache_dir'] == cache['cache_dir']
    cfg['optimization']['performance']['pin_memory'] = True      # an unknown key still fails, named
    old.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = boxrefine('train', '--config', old, '--out', tmp_path / 'run2', check=False)
    assert r.returncode == 1 and ("unknown config key 'optimization.performance.pin_memory'; valid keys here: "
                                  "batch_size_multiplier, data_sampling, use_amp") in r.stderr, r.stderr


def test_shipped_configs_load():
    root = Path(__file__).parents[1]
    assert TrainConfig.load(root / 'configs' / 'box_refinement.yaml').precision == 'auto'
    assert TrainConfig.load(root / 'configs' / 'demo.yaml').hqsam['allow_random_init'] is True


def test_predictions_of_a_run_open_in_the_viewer(demo_run):
    "The refined boxes of a finished run, reloaded from best.pt through the warm cache, match its report, and the viewer shows them."
    from boxrefine.boxes import paired_iou
    from boxrefine.refiner import predict_refiner
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


def test_refine_detections_end_to_end(demo_run, tmp_path):
    "`boxrefine refine` on the demo's jittered detections: ids, categories and scores kept, boxes refined, clamped."
    out, r = demo_run
    assert 'refining jittered detections' in r.stdout and (out / 'refined_examples.png').is_file()
    report = json.loads((out / 'report.json').read_text())
    assert [b['input_iou'] for b in report['val_iou_buckets']] == ['< 0.5', '0.5-0.7', '0.7-0.9', '>= 0.9']
    assert report['refinement']['refined'] == len(json.loads((out / 'detections_val_jittered.json').read_text()))
    dets = json.loads((out / 'detections_val_jittered.json').read_text())
    gt = json.loads((out / 'data' / 'val.json').read_text())
    extra = [{'image_id': 4242, 'category_id': 1, 'bbox': [1, 1, 5, 5], 'score': 0.9},          # unknown image
             {'image_id': dets[0]['image_id'], 'category_id': 1, 'bbox': [float('nan'), 1, 5, 5],
              'score': 0.9}]
    (tmp_path / 'dets.json').write_text(json.dumps(dets + extra))
    r = boxrefine('refine', '--run', out, '--detections', tmp_path / 'dets.json', '--images', out / 'data' / 'images',
                  '--gt', out / 'data' / 'val.json', '--output', tmp_path / 'refined.json')
    assert f'refined {len(dets)} of {len(dets) + 1} boxes' in r.stdout and '1 unknown image' in r.stdout, r.stdout
    assert 'dropped 1 invalid' in r.stdout and 'AP' in r.stdout and '>= 0.9' in r.stdout
    refined = json.loads((tmp_path / 'refined.json').read_text())
    assert len(refined) == len(dets) + 1
    assert [(d['image_id'], d['category_id'], d['score']) for d in refined] == \
        [(d['image_id'], d['category_id'], d['score']) for d in dets + extra[:1]]
    sizes = {im['id']: (im['width'], im['height']) for im in gt['images']}
    for d in refined[:-1]:
        x, y, w, h = d['bbox']
        W, H = sizes[d['image_id']]
        assert 0 <= x and 0 <= y and x + w <= W + 1e-3 and y + h <= H + 1e-3 and w > 0 and h > 0
    assert refined[-1] == extra[0]
    rep = json.loads((tmp_path / 'refined.report.json').read_text())
    assert rep['unchanged']['unknown_image'] == 1 and rep['dropped_examples'][0]['reason'] == 'bbox is not finite'
    assert set(rep['evaluation']['before']) == set(rep['evaluation']['after']) and 'AP' in rep['evaluation']['after']


def test_refine_bad_inputs(demo_run, tmp_path):
    "No checkpoint, a crafted pickle, missing images: clear errors or counted skips; no code runs."
    out, _ = demo_run
    gt = json.loads((out / 'data' / 'val.json').read_text())
    dets = tmp_path / 'dets.json'
    dets.write_text(json.dumps([{'image_id': gt['images'][0]['id'], 'category_id': 1, 'bbox': [1, 1, 5, 5],
                                 'score': 1.0}]))
    common = ['--detections', dets, '--images', out / 'data' / 'images', '--output', tmp_path / 'o.json']
    empty = tmp_path / 'empty_run'
    empty.mkdir()
    r = boxrefine('refine', '--run', empty, *common, check=False)
    assert r.returncode == 1 and 'has no checkpoint best.pt' in r.stderr, r.stderr
    marker = tmp_path / 'pwned'
    write_crafted_pickle(empty / 'best.pt', marker)
    r = boxrefine('refine', '--run', empty, *common, check=False)
    assert r.returncode == 1 and 'unpickling it could run code' in r.stderr and not marker.exists()
    images = tmp_path / 'images'
    shutil.copytree(out / 'data' / 'images', images)
    (images / gt['images'][0]['file_name']).unlink()
    r = boxrefine('refine', '--run', out, '--detections', dets, '--images', images, '--gt', out / 'data' / 'val.json',
                  '--output', tmp_path / 'o.json')
    assert '1 missing image' in r.stdout, r.stdout
    assert json.loads((tmp_path / 'o.json').read_text()) == json.loads(dets.read_text())


def test_refine_a_boxgen_file(demo_run, tmp_path):
    "A boxgen file refined into a boxgen file: same images, same count, scores kept, sidecar records it."
    from boxrefine.boxgen import load_boxes, write_boxes
    out, _ = demo_run
    gt = json.loads((out / 'data' / 'val.json').read_text())
    names = [Path(im['file_name']).stem for im in gt['images']]
    boxes = {n: [{'xyxy': [10.0, 10.0, 90.0, 80.0], 'score': 0.8, 'label': 'salient', 'source': 'saliency'}]
             for n in names}
    write_boxes(tmp_path / 'gen.json', boxes, {'params': {'method': 'saliency'}})
    boxrefine('refine', '--run', out, '--boxes', tmp_path / 'gen.json', '--images', out / 'data' / 'images',
              '--output', tmp_path / 'gen_refined.json')
    refined, meta = load_boxes(tmp_path / 'gen_refined.json')
    assert list(refined) == names and all(len(v) == 1 and v[0]['score'] == 0.8 for v in refined.values())
    assert all(0 <= v[0]['iou_pred'] <= 1 for v in refined.values())      # each with its quality
    assert meta['refined']['refined'] == len(names)


def test_refine_method_sam_side_by_side(demo_run, tmp_path):
    "`refine --method sam --compare`: SAM's boxes written (count, ids, scores kept, clamped), the table and picture."
    out, _ = demo_run
    dets = json.loads((out / 'detections_val_jittered.json').read_text())
    gt = json.loads((out / 'data' / 'val.json').read_text())
    r = boxrefine('refine', '--run', out, '--detections', out / 'detections_val_jittered.json',
                  '--images', out / 'data' / 'images', '--gt', out / 'data' / 'val.json',
                  '--output', tmp_path / 'sam.json', '--method', 'sam', '--compare')
    assert 'HQ-SAM box prompt' in r.stdout and 'picture:' in r.stdout, r.stdout
    assert all(f"{m:>8} " in r.stdout for m in ('input', 'refiner', 'sam')), r.stdout
    got = json.loads((tmp_path / 'sam.json').read_text())
    assert [(d['image_id'], d['category_id'], d['score']) for d in got] == \
        [(d['image_id'], d['category_id'], d['score']) for d in dets]
    sizes = {im['id']: (im['width'], im['height']) for im in gt['images']}
    for d, before in zip(got, dets):
        x, y, w, h = d['bbox']
        W, H = sizes[d['image_id']]
        assert 0 <= x and 0 <= y and x + w <= W + 1e-3 and y + h <= H + 1e-3 and w > 0 and h > 0
        if d['bbox'] != before['bbox']:             # a mask's tight box: whole pixels
            assert all(float(v).is_integer() for v in d['bbox']), d['bbox']
    rep = json.loads((tmp_path / 'sam.report.json').read_text())
    assert rep['method'] == 'sam' and rep['random_init'] is True and 'steps' not in rep
    assert rep['sam'] == {'multimask': False, 'hq_token_only': False, 'min_mask_area': 16, 'min_box_iou': 0.1}
    fallbacks = sum(rep['unchanged'][k] for k in ('empty_mask', 'small_mask', 'far_from_box'))
    assert rep['refined'] + fallbacks == len(dets) == rep['written']
    rows = rep['comparison']['rows']
    assert list(rows) == ['input', 'refiner', 'sam']
    assert all({'AP', 'AP75', 'AR100', 'mean_iou'} <= set(row) and len(row['buckets']) == 4 for row in rows.values())
    assert rows['input']['AP'] == rep['evaluation']['before']['AP'] and rows['sam']['AP'] == rep['evaluation']['after']['AP']
    assert (tmp_path / 'sam.compare.png').read_bytes()[:4] == b'\x89PNG'


def test_refine_method_sam_on_a_boxgen_file(demo_run, tmp_path):
    "A boxgen file through SAM's box prompt: same images, same count, scores kept, the sidecar says how."
    from boxrefine.boxgen import load_boxes, write_boxes
    out, _ = demo_run
    gt = json.loads((out / 'data' / 'val.json').read_text())
    names = [Path(im['file_name']).stem for im in gt['images']]
    boxes = {n: [{'xyxy': [10.0, 10.0, 90.0, 80.0], 'score': 0.8, 'label': 'salient', 'source': 'saliency'},
                 {'xyxy': [100.0, 60.0, 330.0, 250.0], 'score': 0.4, 'label': 'salient', 'source': 'saliency'}]
             for n in names}
    write_boxes(tmp_path / 'gen.json', boxes, {'params': {'method': 'saliency'}})
    r = boxrefine('refine', '--run', out, '--boxes', tmp_path / 'gen.json', '--images', out / 'data' / 'images',
                  '--output', tmp_path / 'gen_sam.json', '--method', 'sam', '--multimask', '--min-box-iou', '0.05')
    refined, meta = load_boxes(tmp_path / 'gen_sam.json')
    assert list(refined) == names and all([b['score'] for b in v] == [0.8, 0.4] for v in refined.values())
    for v in refined.values():
        for b in v:
            x0, y0, x1, y1 = b['xyxy']
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240     # clamped to the 320x240 images
    rep = meta['refined']
    assert rep['method'] == 'sam' and rep['sam']['multimask'] is True and rep['sam']['min_box_iou'] == 0.05
    assert rep['refined'] + sum(rep['unchanged'].values()) == 2 * len(names), rep
    assert 'HQ-SAM box prompt' in r.stdout


def test_refine_method_flags_checked(demo_run, tmp_path):
    "SAM's options without SAM, --compare without --gt, --steps with SAM, bad values: one-line errors."
    out, _ = demo_run
    common = ['refine', '--run', out, '--detections', out / 'detections_val_jittered.json',
              '--images', out / 'data' / 'images', '--output', tmp_path / 'o.json']
    for extra, message in [(['--multimask'], '--multimask: SAM prompt options go with --method sam or --compare'),
                           (['--compare'], '--compare needs --gt'),
                           (['--method', 'sam', '--steps', '2'], "--steps is the refiner's"),
                           (['--method', 'sam', '--min-box-iou', '2'], 'min_box_iou must be in [0, 1)'),
                           (['--method', 'grabcut'], "invalid choice: 'grabcut'")]:
        r = boxrefine(*common, *extra, check=False)
        assert r.returncode != 0 and message in r.stderr, (extra, r.stderr)
    assert not (tmp_path / 'o.json').exists()


def test_demo_ablation(demo_run, tmp_path):
    "`demo --ablation` on a tiny demo (its warm cache copied): four variants and the verdict in report.json."
    out, _ = demo_run
    demo = tmp_path / 'demo'
    shutil.copytree(out, demo)
    r = boxrefine('demo', '--out', demo, '--train-images', 6, '--val-images', 3, '--epochs', 1, '--ablation')
    report = json.loads((demo / 'report.json').read_text())
    assert report['precompute_images'] == 0                      # the copied cache was warm
    ab = report['ablation']
    assert list(ab['variants']) == ['embedding + early ViT feature + thumbnail', 'embedding + thumbnail',
                                    'embedding + early ViT feature', 'embedding only']
    assert [(v['use_interm'], v['use_pixels']) for v in ab['variants'].values()] == \
        [(True, True), (False, True), (True, False), (False, False)]
    assert ab['random_init'] is True and report['random_init'] is True and ab['epochs'] == 1
    assert abs(ab['variants']['embedding + early ViT feature + thumbnail']['refined_iou'] - report['refined_iou']) < 1e-3
    assert 'carries_gain' in ab and ab['text'] in r.stdout and '| embedding only |' in r.stdout
    assert (demo / 'ablation' / 'embedding_only' / 'best.pt').is_file()


def test_refine_maps_ids_only_through_a_coco_file(demo_run, tmp_path):
    "Without --gt, ids are never guessed from the end of a file name (shape_00048.png is image 49)."
    out, _ = demo_run
    dets = out / 'detections_val_jittered.json'
    common = ['refine', '--run', out, '--detections', dets, '--images', out / 'data' / 'images',
              '--output', tmp_path / 'o.json']
    r = boxrefine(*common, check=False)
    assert r.returncode == 1 and 'name no file' in r.stderr and '--ann' in r.stderr, r.stderr
    assert not (tmp_path / 'o.json').exists()
    images = [{k: im[k] for k in ('id', 'file_name', 'width', 'height')}
              for im in json.loads((out / 'data' / 'val.json').read_text())['images']]
    (tmp_path / 'images.json').write_text(json.dumps({'images': images, 'annotations': [], 'categories': []}))
    r = boxrefine(*common, '--ann', tmp_path / 'images.json')
    n = len(json.loads(dets.read_text()))
    assert f'refined {n} of {n} boxes' in r.stdout, r.stdout
    assert r.stdout.count('carry no learned knowledge') == 1      # a run without weights says so, once


def test_refine_run_folder_is_data_not_instructions(demo_run, tmp_path):
    "The run's cache is found inside the run folder, whatever the working folder or the checkpoint says."
    from boxrefine.engine import save_checkpoint
    out, _ = demo_run
    run = tmp_path / 'copied_run'
    shutil.copytree(out, run)
    elsewhere, other = tmp_path / 'elsewhere', tmp_path / 'other_cache'
    elsewhere.mkdir()
    ck = load_checkpoint(run / 'best.pt')
    ck['config']['optimization']['feature_cache']['cache_dir'] = str(other)
    save_checkpoint(run / 'best.pt', **ck)
    args = ['refine', '--run', run, '--detections', run / 'detections_val_jittered.json',
            '--images', run / 'data' / 'images', '--gt', run / 'data' / 'val.json', '--output', tmp_path / 'o.json']
    r = boxrefine(*args, cwd=elsewhere)
    assert list(elsewhere.iterdir()) == [] and not other.exists(), list(elsewhere.iterdir())
    assert 'outside the run folder: not used' in r.stdout and 'to extract' not in r.stdout, r.stdout
    ck['config']['model']['hidden'] = 10 ** 9                 # the recorded config sizes nothing unchecked
    save_checkpoint(run / 'best.pt', **ck)
    r = boxrefine(*args, check=False)
    assert r.returncode == 1 and 'does not match its weights' in r.stderr, r.stderr[-2000:]


def test_audit_ranks_a_file_with_moved_boxes(demo_run, tmp_path):
    "`boxrefine audit`: every annotation ranked by predicted IoU, with a suggestion; bad records counted."
    out, _ = demo_run
    gt = json.loads((out / 'data' / 'val.json').read_text())
    a = gt['annotations'][0]
    a['bbox'] = [a['bbox'][0] + 0.3 * a['bbox'][2], a['bbox'][1], a['bbox'][2], a['bbox'][3]]   # moved
    gt['annotations'].append({'id': 10**6, 'image_id': gt['images'][0]['id'], 'category_id': 1,
                              'bbox': [1, 1, 0, 3]})
    gt['images'].append({'id': 777, 'file_name': '../outside.png', 'width': 5, 'height': 5})
    gt['annotations'].append({'id': 10**6 + 1, 'image_id': 777, 'category_id': 1, 'bbox': [1, 1, 2, 2]})
    (tmp_path / 'ann.json').write_text(json.dumps(gt))
    r = boxrefine('audit', '--run', out, '--ann', tmp_path / 'ann.json', '--images', out / 'data' / 'images',
                  '--output', tmp_path / 'audit.json', '--show', 3)
    audit = json.loads((tmp_path / 'audit.json').read_text())
    rows, s = audit['annotations'], audit['summary']
    assert len(rows) == len(gt['annotations']) - 2 and s['invalid_box'] == 1 and s['unknown_image'] == 1, s
    assert [r['iou_pred'] for r in rows] == sorted(r['iou_pred'] for r in rows)
    assert a['id'] in {r['annotation_id'] for r in rows}
    assert all(len(r['suggested_bbox']) == 4 and 0 <= r['label_vs_suggestion'] <= 1 for r in rows)
    assert (tmp_path / 'audit.png').read_bytes()[:4] == b'\x89PNG' and 'audited' in r.stdout


def test_gate_command_calibrates_and_refine_uses_it(demo_run, tmp_path):
    out, _ = demo_run
    run = tmp_path / 'run'
    shutil.copytree(out, run)                       # its feature cache too: nothing to extract
    (run / 'gate.json').unlink()
    data = run / 'data'
    r = boxrefine('gate', '--run', run, '--gt', data / 'val.json', '--images', data / 'images',
                  '--max-loss', '0.5', '--max-box-loss', '1')   # any margin is safe: the first is kept
    assert 'gate margin 0.005' in r.stdout and json.loads((run / 'gate.json').read_text())['margin'] == 0.005
    r = boxrefine('refine', '--run', run, '--detections', run / 'detections_val_jittered.json', '--images',
                  data / 'images', '--gt', data / 'val.json', '--output', tmp_path / 'r.json')
    assert json.loads((tmp_path / 'r.report.json').read_text())['gate_margin'] == 0.005
    r = boxrefine('refine', '--run', run, '--detections', run / 'detections_val_jittered.json', '--images',
                  data / 'images', '--gt', data / 'val.json', '--output', tmp_path / 'r2.json', '--gate-margin', '0.2')
    assert json.loads((tmp_path / 'r2.report.json').read_text())['gate_margin'] == 0.2   # the option wins
    (run / 'gate.json').write_text('{"margin": "wide"}')        # a hostile gate file: one line, no traceback
    r = boxrefine('refine', '--run', run, '--detections', run / 'detections_val_jittered.json', '--images',
                  data / 'images', '--output', tmp_path / 'r3.json', '--gt', data / 'val.json', check=False)
    assert r.returncode != 0 and "'margin' must be a number in [-1, 1]" in r.stderr and 'Traceback' not in r.stderr
