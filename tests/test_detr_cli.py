"`boxrefine detr` end to end on the shapes fixture: a tiny random-init model, on the CPU, as users run it."
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from boxrefine.detr import VAL_RESULTS
from boxrefine.engine import load_checkpoint


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
    best = max(rows, key=lambda x: float(x['val_AP']))     # the first of equals, as for best.pt
    assert report['best_epoch'] == int(best['epoch'])
    assert [c['name'] for c in report['per_class']] == ['cloud', 'heart', 'arrow', 'star']
    for name in VAL_RESULTS:
        assert (tmp_path / name).is_file(), name
    assert [x['epoch'] for x in csv.DictReader(open(tmp_path / 'per_class.csv'))] == [best['epoch']] * 4
    # the saved detections are the best epoch's validation: `cocoeval` scores them at the best AP
    shapes_gt = fixtures / 'shapes3' / 'gt_dataset.json'
    scored = json.loads(boxrefine('cocoeval', shapes_gt, tmp_path / 'detections_val.json', '--json').stdout)
    assert scored['AP'] == report['best_AP'] and scored['per_class'] == report['per_class']

    r = boxrefine(*detr_args(fixtures, tmp_path, '--num-epochs', 3, '--resume', tmp_path / 'last.pt'))
    assert 'resumed from' in r.stdout
    rows = list(csv.DictReader(open(tmp_path / 'metrics.csv')))
    assert [int(x['epoch']) for x in rows] == [1, 2, 3]
    report = json.loads((tmp_path / 'report.json').read_text())
    best = max(rows, key=lambda x: float(x['val_AP']))     # of all three epochs, resumed or not
    assert report['best_epoch'] == int(best['epoch']) and len(report['per_class']) == 4
    assert [x['epoch'] for x in csv.DictReader(open(tmp_path / 'per_class.csv'))] == [best['epoch']] * 4


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


# What users of the old scripts type (issue 16): `... --amp --pretrained --score-threshold 0.05 ...`,
# where `--pretrained` alone means the standard Deformable DETR weights from the local Hugging Face cache.

STANDARD = 'SenseTime/deformable-detr'


def cached_as(model_dir, cache, repo_id=STANDARD):
    "A Hugging Face hub cache at `cache` holding the files of `model_dir` as `repo_id`, as `hf download` lays it out."
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / 'snapshots' / ('0' * 40))
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('0' * 40)
    return cache


def boxrefine_env(env, *args):
    "`boxrefine ARGS` with the environment `env`."
    return subprocess.run([shutil.which('boxrefine'), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=env)


def bare_pretrained_args(fixtures, out):
    shapes = fixtures / 'shapes3'
    return ['detr', '--train-img', shapes, '--train-ann', shapes / 'gt_dataset.json', '--batch-size', 1,
            '--model-size', 'tiny', '--image-size', 128, 192, '--num-epochs', 1, '--amp', '--pretrained',
            '--score-threshold', 0.05, '--output-dir', out]


def test_bare_pretrained_loads_the_standard_weights_from_the_local_cache(fixtures, tmp_path):
    "A tiny model stands in for the real weights under the standard id: the run finds it offline and records it."
    from boxrefine.detr import CategoryMap, build_detr
    shapes = fixtures / 'shapes3'
    with pytest.warns(UserWarning, match='WITHOUT pretrained weights'):
        model, _ = build_detr(CategoryMap.from_coco(shapes / 'gt_dataset.json'), allow_random_init=True, size='tiny')
    model.save_pretrained(tmp_path / 'tiny')
    cache = cached_as(tmp_path / 'tiny', tmp_path / 'hub')
    env = {**os.environ, 'HF_HUB_CACHE': str(cache), 'HF_HUB_OFFLINE': '1'}
    r = boxrefine_env(env, *bare_pretrained_args(fixtures, tmp_path / 'run'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'WITHOUT pretrained weights' not in r.stderr
    report = json.loads((tmp_path / 'run' / 'report.json').read_text())
    assert (report['pretrained'], report['random_init'], report['epochs']) == (STANDARD, False, 1)


def test_bare_pretrained_names_what_the_cache_lacks(fixtures, tmp_path):
    "Nothing cached (HF_HOME at an empty folder): one line names the model, the file, the cache and the fix."
    env = {k: v for k, v in os.environ.items() if k != 'HF_HUB_CACHE'}
    env |= {'HF_HOME': str(tmp_path / 'empty'), 'HF_HUB_OFFLINE': '1'}
    args = [str(a) for a in bare_pretrained_args(fixtures, tmp_path / 'run')]
    code = ("import sys\nfrom boxrefine.cli import main\n"
            f"rc = main({args!r})\nprint('torch' in sys.modules)\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and r.stdout.strip() == 'False', r.stderr    # answered before torch is imported
    assert (f"--pretrained without a value means {STANDARD} from the local Hugging Face cache "
            f"({tmp_path / 'empty' / 'hub'}), which lacks its config.json; nothing is downloaded here") in r.stderr
    assert f'`hf download {STANDARD}`' in r.stderr and '--pretrained PATH' in r.stderr
    (tmp_path / 'cfg').mkdir()
    (tmp_path / 'cfg' / 'config.json').write_text('{}')
    env |= {'HF_HUB_CACHE': str(cached_as(tmp_path / 'cfg', tmp_path / 'half'))}
    r = boxrefine_env(env, *bare_pretrained_args(fixtures, tmp_path / 'run'))
    assert r.returncode == 1 and 'which lacks its model.safetensors or pytorch_model.bin' in r.stderr, r.stderr
    assert not (tmp_path / 'run').exists()


COCO_PLOTS = ['pr_curve_iou50.png', 'pr_curve_iou50_95.png', 'f1_confidence.png', 'confusion_matrix.png']


def test_cocoeval_prints_the_table_and_writes_the_plots(fixtures, tmp_path):
    "The 12 statistics as before, the per-category table, and with --plots four PNG files, listed."
    c100 = fixtures / 'coco_val2014_100'
    r = boxrefine('cocoeval', c100 / 'instances_val2014_100.json', c100 / 'instances_val2014_fakebbox100_results.json',
                  '--plots', tmp_path / 'plots')
    lines = r.stdout.splitlines()
    assert lines[:3] == ['    AP 0.5046', '  AP50 0.6970', '  AP75 0.5730'] and lines[8] == ' AR100 0.5954'
    assert lines[12] == '' and lines[13].split() == ['id', 'category', 'gt', 'dets', 'AP', 'AP50', 'AR100']
    assert lines[14].split() == ['1', 'person', '250', '201', '0.5326', '0.7883', '0.6040']
    assert lines[94].split() == ['mean', 'of', '70', '830', '734', '0.5046', '0.6970', '0.5954']
    assert lines[95:] == [f"wrote {tmp_path / 'plots' / name}" for name in COCO_PLOTS]
    assert sorted(p.name for p in (tmp_path / 'plots').iterdir()) == sorted(COCO_PLOTS)
    for name in COCO_PLOTS:
        assert (tmp_path / 'plots' / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cocoeval_per_class_agrees_between_backends(fixtures, capsys):
    "faster-coco-eval's per-category rows against pycocotools', through the command (in process)."
    from boxrefine.cli import main
    c100 = fixtures / 'coco_val2014_100'
    args = ['cocoeval', str(c100 / 'instances_val2014_100.json'),
            str(c100 / 'instances_val2014_fakebbox100_results.json'), '--json']
    got = {}
    for backend in ('faster', 'pycocotools'):
        assert main(args + ['--backend', backend]) == 0
        got[backend] = json.loads(capsys.readouterr().out)
    fast, ref = got['faster']['per_class'], got['pycocotools']['per_class']
    assert len(fast) == 80 and sum(r['AP'] is None for r in fast) == 10
    for a, b in zip(fast, ref):
        assert {k: a[k] for k in ('category_id', 'name', 'gt', 'detections')} == \
               {k: b[k] for k in ('category_id', 'name', 'gt', 'detections')}
        for k in ('AP', 'AP50', 'AR100'):
            assert (a[k] is None and b[k] is None) or abs(a[k] - b[k]) <= 1e-6, (a, b)


def test_cocoeval_says_why_a_statistic_is_missing(fixtures, capsys):
    "COCO's -1 (no small objects in the shapes) was printed as a score, '-1.0000'."
    from boxrefine.cli import main
    shapes = fixtures / 'shapes3'
    assert main(['cocoeval', str(shapes / 'gt_dataset.json'), str(shapes / 'dt_dataset.json')]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ['    AP 0.6947', '  AP50 0.6947', '  AP75 0.6947', '   APs n/a (no small objects)']
    assert lines[9] == '   ARs n/a (no small objects)'


def test_cocoeval_warns_of_results_written_as_xyxy(fixtures, tmp_path, capsys):
    "Results in xyxy were scored without a word (the fake results: AP 0.03 instead of 0.50)."
    from boxrefine.cli import main
    c100 = fixtures / 'coco_val2014_100'
    dets = json.loads((c100 / 'instances_val2014_fakebbox100_results.json').read_text())
    path = tmp_path / 'xyxy.json'
    path.write_text(json.dumps([{**d, 'bbox': [x, y, x + w, y + h]} for d in dets for x, y, w, h in [d['bbox']]]))
    assert main(['cocoeval', str(c100 / 'instances_val2014_100.json'), str(path), '--plots', str(tmp_path / 'p')]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err                     # once, though evaluation and plots each read the file
    assert err[0].startswith(f"boxrefine cocoeval: warning: {path}: 568 of 734 boxes leave their image")
    assert 'e.g. detection 0 (image 42): bbox [' in err[0]


def test_f1_counts_low_scored_false_positives():
    "4 objects; hits at 0.9, 0.8, 0.6; false positives at 0.7, 0.3, 0.2, 0.1. F1 written by hand."
    from boxrefine.evaluate import detection_matches, f1_confidence
    gt = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 400, 'height': 100}],
          'categories': [{'id': 1, 'name': 'box'}],
          'annotations': [{'id': i + 1, 'image_id': 1, 'category_id': 1, 'area': 400, 'iscrowd': 0,
                           'bbox': [10 + 100 * i, 10, 20, 20]} for i in range(4)]}
    det = lambda box, s: {'image_id': 1, 'category_id': 1, 'bbox': box, 'score': s}
    hit = lambda i, s: det([10 + 100 * i, 10, 20, 20], s)
    dets = [hit(0, .9), hit(1, .8), det([60, 60, 20, 20], .7), hit(2, .6)] + [det([60, 60, 20, 20], s) for s in (.3, .2, .1)]
    conf, f1 = f1_confidence(detection_matches(gt, dets), [0, .25, .5, .65, .75, .85, .95])
    # at 0 all 7 are kept: P 3/7, R 3/4 (interpolated precision said 3/4, so F1 0.75 and "deploy at 0")
    assert f1[0] == pytest.approx([6 / 11, 6 / 9, 6 / 8, 4 / 7, 4 / 6, 2 / 5, 0])


def test_pr_curves_of_a_sparse_set_draw_each_category(fixtures):
    "On one axes, the shapes' arrow and star curves (precision 1 throughout) lay on each other and on the frame."
    from boxrefine.evaluate import PRCurves, coco_evaluation, pr_figure
    shapes = fixtures / 'shapes3'
    fig = pr_figure(PRCurves.from_eval(coco_evaluation(shapes / 'gt_dataset.json', shapes / 'dt_dataset.json')))
    titles = [a.get_title() for a in fig.axes if a.axison]
    assert titles == ['all categories', 'cloud: AP50 0.442', 'heart: AP50 0.337', 'arrow: AP50 1.000',
                      'star: AP50 1.000']
    for ax in fig.axes[1:5]:
        assert ax.get_ylim() == (-0.04, 1.04) and len(ax.get_lines()) == 1
