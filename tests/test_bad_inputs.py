"""Hostile and broken inputs: configs, COCO ground truth, detections, a full disk.

Each is an error that names the file, the record and the key."""
import errno
import json
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from boxrefine.atomic import DiskFullError, atomic_write_bytes
from boxrefine.data import CocoFormatError, load_coco_boxes
from boxrefine.detr import DetrDataset, evaluate_detections, make_processor
from boxrefine.config import ConfigError, TrainConfig


def boxrefine(*args, cwd=None):
    return subprocess.run([shutil.which('boxrefine'), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# --- configs -------------------------------------------------------------------------------------

@pytest.mark.parametrize('yaml_text, problem', [
    ('training:\n  num_epochs: 0\n', 'training.num_epochs: must be >= 1 (got 0)'),
    ('model:\n  steps: 0\n', 'model.steps: must be >= 1 (got 0)'),
    ('hqsam:\n  allow_random_init: "no"\n', "hqsam.allow_random_init: must be true or false (got 'no')"),
    ('training:\n  batch_size: 0\n', 'training.batch_size: must be >= 1 (got 0)'),
    ('training:\n  learning_rate: 0\n', 'training.learning_rate: must be > 0 (got 0)'),
    ('training:\n  learning_rate: fast\n', "training.learning_rate: must be a number (got 'fast')"),
    ('data:\n  sample_ratio: 0\n', 'data.sample_ratio: must be > 0 (got 0)'),
    ('data:\n  noise_scale: -0.1\n', 'data.noise_scale: must be >= 0 (got -0.1)'),
    ('training:\n  num_workers: -2\n', 'training.num_workers: must be >= 0 (got -2)'),
    ('training:\n  feature_batch_size: 0\n', 'training.feature_batch_size: must be >= 1 (got 0)'),
    ('training:\n  precision: fp8\n',
     "training.precision: must be one of 'auto', 'fp32', 'bf16' or 'fp16' (got 'fp8')"),
    ('optimization:\n  feature_cache:\n    storage_dtype: int4\n',
     "optimization.feature_cache.storage_dtype: must be one of 'float16', 'bfloat16', 'float32' or "
     "'int8' (got 'int4')"),
    ('training:\n  batch_sise: 4\n',
     "unknown config key 'training.batch_sise'; valid keys here: batch_size, colour_jitter, "
     "edge_weight, feature_batch_size"),
    ('training: 3\n', "config key 'training' must be a section (a mapping), got 3"),
    ('- training\n', 'a config must be a mapping of sections (got list)'),
])
def test_bad_config_values_name_file_and_key(tmp_path, yaml_text, problem):
    path = tmp_path / 'x.yaml'
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        TrainConfig.load(path)
    assert str(e.value).startswith(f"{path}: {problem}"), str(e.value)


def test_config_numbers_aliases_and_syntax(tmp_path):
    (tmp_path / 'ok.yaml').write_text('training:\n  learning_rate: 1e-3\n  weight_decay: 5E-4\n'
                                      'hqsam:\n  checkpoint_path: sam.pth\n  allow_random_init: false\n')
    cfg = TrainConfig.load(tmp_path / 'ok.yaml')       # PyYAML reads unquoted 1e-3 as a string
    assert (cfg.training['learning_rate'], cfg.training['weight_decay']) == (1e-3, 5e-4)
    assert cfg.hqsam['checkpoint'] == 'sam.pth' and cfg.hqsam['allow_random_init'] is False
    assert isinstance(cfg, dict) and cfg.precision == 'fp32'
    (tmp_path / 'bad.yaml').write_text('training:\n  batch_size: 8\n   num_epochs: 2\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml: line 3, column 14: not valid YAML'):
        TrainConfig.load(tmp_path / 'bad.yaml')


def test_cli_config_errors_are_one_line_before_any_model(tmp_path):
    (tmp_path / 'zero.yaml').write_text('training:\n  num_epochs: 0\nhqsam:\n  allow_random_init: "no"\n')
    r = boxrefine('train', '--config', 'zero.yaml', cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == ("boxrefine train: error: zero.yaml: training.num_epochs: must be >= 1 (got 0); "
                        "hqsam.allow_random_init: must be true or false (got 'no')\n")
    assert r.stdout == ''                     # nothing built, nothing extracted


# --- COCO ground truth ---------------------------------------------------------------------------

def shapes_gt(fixtures) -> dict:
    return json.loads((fixtures / 'shapes3' / 'gt_dataset.json').read_text())


def coco_error(tmp_path, fixtures, content) -> str:
    path = tmp_path / 'gt.json'
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CocoFormatError) as e:
        load_coco_boxes(path, fixtures / 'shapes3', verbose=False)
    prefix = f"{path}: "
    assert str(e.value).startswith(prefix), str(e.value)
    return str(e.value)[len(prefix):]


def test_coco_structure_errors_name_file_record_and_key(tmp_path, fixtures):
    gt = shapes_gt(fixtures)
    assert coco_error(tmp_path, fixtures, gt['images']) == (
        "must be a JSON object with 'images' and 'annotations' lists (got a list)")
    assert coco_error(tmp_path, fixtures, {**gt, 'images': {'1': gt['images'][0]}}) == (
        'images: must be a list (got a dict)')
    assert coco_error(tmp_path, fixtures, {'annotations': gt['annotations']}) == "lacks the key 'images'"
    no_bbox = [dict(gt['annotations'][0]), *gt['annotations'][1:]]
    del no_bbox[0]['bbox']
    assert coco_error(tmp_path, fixtures, {**gt, 'annotations': no_bbox}) == (
        "annotations[0] (id 1) lacks 'bbox'")
    no_image_id = [dict(gt['annotations'][0]), *gt['annotations'][1:]]
    del no_image_id[0]['image_id']
    assert coco_error(tmp_path, fixtures, {**gt, 'annotations': no_image_id}) == (
        "annotations[0] (id 1) lacks 'image_id'")
    assert coco_error(tmp_path, fixtures, '{"images": [], "annotations": [}') == (
        'not valid JSON: Expecting value at line 1, column 32')


def test_duplicate_image_ids_are_an_error(tmp_path, fixtures):
    gt = shapes_gt(fixtures)
    gt['images'][1]['id'] = gt['images'][0]['id']     # before: image 2 got image 1's boxes
    assert coco_error(tmp_path, fixtures, gt).startswith('images[1]: duplicate id 1 (also images[0])')


def test_image_size_must_match_the_file(tmp_path, fixtures):
    gt = shapes_gt(fixtures)
    gt['images'][2]['height'] = 200                   # before: train accepted it, boxes misplaced
    img = fixtures / 'shapes3' / gt['images'][2]['file_name']
    assert coco_error(tmp_path, fixtures, gt) == (
        f"images[2] (id 3): width, height: 256x200, but {img} is 256x256: its boxes would be wrong")
    with pytest.raises(CocoFormatError, match=r'images\[2\] \(id 3\): width, height'):
        DetrDataset(tmp_path / 'gt.json', fixtures / 'shapes3', make_processor(128, 192), verbose=False)


def test_bad_training_boxes_are_still_counted_and_skipped(tmp_path, fixtures):
    gt = shapes_gt(fixtures)
    gt['annotations'][0]['bbox'] = [10, float('nan'), 5, 5]
    gt['annotations'][1]['bbox'] = [10, 10, 0, 5]
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    records, report = load_coco_boxes(tmp_path / 'gt.json', fixtures / 'shapes3', verbose=False)
    assert (report['skipped_nonfinite'], report['skipped_degenerate']) == (1, 1)


# --- evaluation ----------------------------------------------------------------------------------

@pytest.fixture
def coco100(fixtures):
    root = fixtures / 'coco_val2014_100'
    return root / 'instances_val2014_100.json', root / 'instances_val2014_fakebbox100_results.json'


def test_nonfinite_ground_truth_box_is_an_error(tmp_path, coco100):
    gt_path, dets = coco100
    gt = json.loads(gt_path.read_text())
    gt['annotations'][0]['bbox'][0] = float('nan')   # before: scored anyway, AP 0.5046 -> 0.4993
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    with pytest.raises(CocoFormatError) as e:
        evaluate_detections(tmp_path / 'gt.json', dets)
    assert str(e.value) == (f"{tmp_path / 'gt.json'}: annotations[0] (id {gt['annotations'][0]['id']}): "
                            f"bbox must be 4 finite numbers (got {gt['annotations'][0]['bbox']})")


def test_bad_detections_name_file_detection_and_key(tmp_path, coco100):
    gt, dets_path = coco100
    dets = json.loads(dets_path.read_text())
    path = tmp_path / 'dets.json'

    def error(content) -> str:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(CocoFormatError) as e:
            evaluate_detections(gt, path)
        return str(e.value)

    assert error([{**dets[0], 'score': 'high'}] + dets[1:]) == (   # before: a TypeError traceback
        f"{path}: detection 0 (image 42): score: must be a number (got 'high')")
    assert error(dets[:3] + [{**dets[3], 'category_id': 12}]) == (
        f"{path}: detection 3 (image {dets[3]['image_id']}): category_id 12 is not among the "
        "ground truth's categories")
    assert error({'annotations': dets}) == f"{path}: must be a JSON list of detections (got a dict)"
    assert error(json.dumps(dets)[:50]).startswith(f"{path}: not valid JSON: ")


def test_negative_width_ground_truth_is_an_error(tmp_path, coco100):
    "Before: scored anyway (pycocotools and faster-coco-eval compute an IoU with it)."
    gt_path, dets = coco100
    gt = json.loads(gt_path.read_text())
    gt['annotations'][3]['bbox'][2] = -5
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    with pytest.raises(CocoFormatError) as e:
        evaluate_detections(tmp_path / 'gt.json', dets)
    assert str(e.value) == (f"{tmp_path / 'gt.json'}: annotations[3] (id {gt['annotations'][3]['id']}): "
                            f"bbox width and height must not be negative (got {gt['annotations'][3]['bbox']})")
    r = boxrefine('cocoeval', 'gt.json', dets, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith(
        "boxrefine cocoeval: error: gt.json: annotations[3] (id ") and r.stderr.count('\n') == 1


def test_ground_truth_annotation_id_0_is_renumbered_with_a_warning(tmp_path):
    "Both libraries read a match on id 0 as 'no match': before, two exact detections scored AP 0.25."
    gt = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 100, 'height': 100}],
          'categories': [{'id': 1, 'name': 'box'}],
          'annotations': [{'id': i, 'image_id': 1, 'category_id': 1, 'bbox': b, 'area': 400, 'iscrowd': 0}
                          for i, b in ((0, [10, 10, 20, 20]), (5, [50, 50, 20, 20]))]}
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    exact = [{'image_id': 1, 'category_id': 1, 'bbox': a['bbox'], 'score': .9} for a in gt['annotations']]
    for backend in ('faster', 'pycocotools'):
        with pytest.warns(UserWarning, match=r"gt.json: annotations\[0\] has id 0, .* evaluated as id 6"):
            assert evaluate_detections(tmp_path / 'gt.json', exact, backend)['AP'] == pytest.approx(1.0)


def test_detections_written_as_xyxy_are_named(tmp_path, coco100):
    "Before: accepted silently (the fake results as xyxy score AP 0.03 instead of 0.50)."
    gt, dets_path = coco100
    dets = json.loads(dets_path.read_text())
    xyxy = [{**d, 'bbox': [x, y, x + w, y + h]} for d in dets for x, y, w, h in [d['bbox']]]
    path = tmp_path / 'xyxy.json'
    path.write_text(json.dumps(xyxy))
    with pytest.warns(UserWarning) as caught:
        evaluate_detections(gt, path)
    message = str(caught[0].message)
    assert message.startswith(f"{path}: 568 of 734 boxes leave their image as COCO's [x, y, width, height] "
                              "but fit inside it as [x1, y1, x2, y2]"), message
    assert "e.g. detection 0 (image 42): bbox [" in message and "on a 640x478 image" in message
    from boxrefine.viz import BoxViewer           # the viewer reads detections through the same check
    with pytest.warns(UserWarning, match='568 of 734 boxes'):
        BoxViewer.from_detections(gt, tmp_path, {'mine': path})


def test_cocoeval_cli_prints_one_line(tmp_path, coco100):
    gt, dets_path = coco100
    dets = json.loads(dets_path.read_text())
    (tmp_path / 'dets.json').write_text(json.dumps([{**dets[0], 'score': None}]))
    r = boxrefine('cocoeval', gt, 'dets.json', cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == ("boxrefine cocoeval: error: dets.json: detection 0 (image 42): score: "
                        "must be a number (got None)\n")


# --- a full disk ---------------------------------------------------------------------------------

def test_disk_full_during_fsync(tmp_path):
    target = tmp_path / 'out' / 'x.bin'
    with mock.patch('os.fsync', side_effect=OSError(errno.ENOSPC, 'No space left on device')):
        with pytest.raises(DiskFullError) as e:
            atomic_write_bytes(target, b'x' * 1000)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"disk full writing {target}: it needs 1,000 bytes and ")
    assert str(e.value).endswith(' bytes are free there; nothing was written')
    assert list((tmp_path / 'out').iterdir()) == []          # no temporary file left


def test_disk_full_during_write(tmp_path):
    real_open = open

    class FullFile:
        "A file on a disk that is full: every write fails."
        def __init__(self, *args): self.f = real_open(*args)
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()
        def write(self, data): raise OSError(errno.ENOSPC, 'No space left on device')

    (tmp_path / 'x.bin').write_bytes(b'old')
    with mock.patch('boxrefine.atomic.open', FullFile, create=True):
        with pytest.raises(DiskFullError, match=r'it needs 3 bytes and [\d,]+ bytes are free'):
            atomic_write_bytes(tmp_path / 'x.bin', b'new')
    assert (tmp_path / 'x.bin').read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['x.bin']


def test_cli_prints_disk_full_in_one_line(tmp_path, capsys):
    from boxrefine import cli
    (tmp_path / 'c.yaml').write_text('output:\n  dir: out\n')

    def train_refiner(cfg, *args):
        atomic_write_bytes(tmp_path / 'out' / 'metrics.csv', b'x' * 2048)

    with mock.patch('os.fsync', side_effect=OSError(errno.ENOSPC, 'No space left on device')), \
         mock.patch('boxrefine.refiner.train_refiner', train_refiner):
        assert cli.main(['train', '--config', str(tmp_path / 'c.yaml')]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"boxrefine train: error: disk full writing {tmp_path / 'out' / 'metrics.csv'}: "
                          "it needs 2,048 bytes and ") and err.count('\n') == 1, err


# --- the first hour of a new user (issue 27) and fault round 2 (issue 28): one line each -------

@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='needs a machine without a GPU')
def test_train_on_a_device_this_machine_lacks_is_one_line(tmp_path):
    (tmp_path / 'c.yaml').write_text('hqsam:\n  device: cuda\n')
    r = boxrefine('train', '--config', 'c.yaml', cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == '', r.stdout
    assert r.stderr == ("boxrefine train: error: device cuda: this machine has no CUDA GPU; use --device cpu "
                        "or --device auto (config: hqsam.device: auto)\n"), r.stderr
    r = boxrefine('train', '--config', 'c.yaml', '--device', 'cuda:0', cwd=tmp_path)
    assert 'device cuda:0: this machine has no CUDA GPU' in r.stderr and 'Traceback' not in r.stderr


def test_shipped_config_device_is_auto():
    cfg = TrainConfig.load(Path(__file__).parents[1] / 'configs' / 'box_refinement.yaml')
    assert cfg['hqsam']['device'] == 'auto' and TrainConfig.load()['hqsam']['device'] == 'auto'


def test_traceback_flag_after_the_command(tmp_path):
    r = boxrefine('train', '--config', 'missing.yaml', '--traceback', cwd=tmp_path)
    assert r.returncode == 1 and 'Traceback (most recent call last)' in r.stderr
    r = boxrefine('train', '--config', 'missing.yaml', cwd=tmp_path)
    assert r.stderr == 'boxrefine train: error: config file not found: missing.yaml\n'


def test_output_that_is_a_folder_or_under_a_file(tmp_path):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'd.json').write_text('[]')
    r = boxrefine('refine', '--run', tmp_path / 'run', '--detections', tmp_path / 'd.json', '--images', tmp_path,
                  '--output', tmp_path)
    assert r.returncode == 1 and f'--output {tmp_path} is a folder: give a file name' in r.stderr, r.stderr
    (tmp_path / 'c.yaml').write_text('hqsam:\n  device: cpu\n')
    r = boxrefine('train', '--config', 'c.yaml', '--out', tmp_path / 'd.json', cwd=tmp_path)
    assert r.returncode == 1 and 'exists and is not a folder' in r.stderr and r.stdout == '', r.stderr


def test_old_pickle_checkpoint_converted_only_when_trusted(tmp_path):
    import argparse
    import torch
    from boxrefine.engine import load_checkpoint
    torch.save({'model': {'w': torch.ones(2)}, 'epoch': 3, 'args': argparse.Namespace(lr=1)}, tmp_path / 'old.pt')
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / 'old.pt')
    assert 'boxrefine convert-checkpoint' in str(e.value) and '\x1b' not in str(e.value)
    r = boxrefine('convert-checkpoint', tmp_path / 'old.pt', tmp_path / 'new.pt')
    assert r.returncode == 1 and 'add --trust' in r.stderr and not (tmp_path / 'new.pt').exists()
    r = boxrefine('convert-checkpoint', tmp_path / 'old.pt', tmp_path / 'new.pt', '--trust')
    assert r.returncode == 0 and load_checkpoint(tmp_path / 'new.pt')['epoch'] == 3


def test_detections_with_huge_numbers_lists_and_deep_nesting(tmp_path):
    (tmp_path / 'run').mkdir()
    for name, text, problem in [('deep.json', '[' * 100_000 + ']' * 100_000, 'nested too deeply'),
                                ('digits.json', '[' + '9' * 5000 + ']', 'cannot read a value')]:
        (tmp_path / name).write_text(text)
        r = boxrefine('cocoeval', tmp_path / name, tmp_path / name)
        assert r.returncode == 1 and problem in r.stderr and 'Traceback' not in r.stderr, r.stderr
