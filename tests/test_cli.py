"The `boxrefine` console script as users run it: installed entry point, version, help, errors."
import configparser
import json
import shutil
import subprocess
import sys

import pytest


def run(*args, check=True, cwd=None):
    exe = shutil.which('boxrefine')
    assert exe, 'the boxrefine console script is not installed (pip install -e .)'
    return subprocess.run([exe, *args], capture_output=True, text=True, check=check, timeout=120,
                          cwd=cwd)


def test_version_matches_settings(root):
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(root / 'settings.ini')
    assert run('--version').stdout.strip() == f"boxrefine {cfg['DEFAULT']['version']}"


def test_help_lists_usage():
    out = run('--help').stdout
    assert out.startswith('usage: boxrefine') and '--version' in out


def test_no_arguments_prints_help():
    assert 'usage: boxrefine' in run().stdout


def test_unknown_subcommand_is_an_error():
    r = run('no-such-command', check=False)
    assert r.returncode == 2 and 'invalid choice' in r.stderr


def test_module_entry_point():
    r = subprocess.run([sys.executable, '-c', 'import boxrefine.boxes, boxrefine.losses, boxrefine.cli'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


BAD_ARGUMENTS = [
    (['boxgen'], 'CIRR root not found: ./cirr_dataset (the default --cirr-root'),   # no ./cirr_dataset here
    (['boxgen', '--max-images', '100', '--output', 'test_boxes.json'], 'CIRR root not found: ./cirr_dataset'),
    (['boxgen', 'merge', 'out.json'], 'usage: boxrefine boxgen merge OUTPUT SHARD'),
    (['boxgen', '--cirr-root', '.', '--method', 'saliency', '--split', 'val', '--shard', '2/2'],
     "argument --shard: shard '2/2': need 0 <= i < n"),
    (['train', '--config', 'missing.yaml'], 'config file not found: missing.yaml'),
    (['detr', '--train-img', '.', '--train-ann', 'none.json'],
     'COCO annotation file not found: none.json'),
    (['detr', '--train-img', '.', '--train-ann', 'x.json', '--batch-size', '0'],
     'argument --batch-size: must be at least 1, got 0'),
    (['cocoeval', 'gt.json', 'dets.json'], 'COCO annotation file not found: gt.json'),
    (['boxstats', 'none.json'], 'boxes file not found: none.json'),
    (['cache', 'info', 'nowhere'], 'cache folder not found: nowhere'),
    (['cache', 'verify', 'nowhere'], 'cache folder not found: nowhere'),
]


@pytest.mark.parametrize('args, message', BAD_ARGUMENTS,
                         ids=[' '.join(a[:2]) for a, _ in BAD_ARGUMENTS])
def test_argument_errors_answer_before_torch(args, message, tmp_path):
    r = run(*args, check=False, cwd=tmp_path)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    code = ("import sys\n"
            "from boxrefine.cli import main\n"
            "try:\n"
            f"    rc = main({args!r})\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('torch' in sys.modules)\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    assert r.stdout.strip() == 'False', 'torch was imported before the arguments were checked'


def fresh_main(args, cwd):
    "Exit status, stderr and whether torch was imported, of `main(args)` in a fresh Python."
    code = ("import sys\n"
            "from boxrefine.cli import main\n"
            f"rc = main({args!r})\n"
            "print('torch' in sys.modules)\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=cwd, timeout=120)
    return r.returncode, r.stderr, r.stdout.strip().splitlines()[-1]


def small_cirr(root, n=3):
    "A CIRR root (plain layout) whose train split lists `n` small PNGs of a dark disc on a light ground."
    from PIL import Image, ImageDraw
    (root / 'image_splits').mkdir(parents=True)
    split = {}
    for i in range(n):
        im = Image.new('RGB', (96, 72), (200, 200, 190))
        ImageDraw.Draw(im).ellipse((10 + 10 * i, 15, 50 + 10 * i, 55), fill=(30, 40, 60))
        (root / 'train').mkdir(exist_ok=True)
        im.save(root / 'train' / f'img{i}.png')
        split[f'img{i}'] = f'./train/img{i}.png'
    (root / 'image_splits' / 'split.rc2.train.json').write_text(json.dumps(split))
    return root


def test_boxgen_quick_start_relies_on_the_old_defaults(tmp_path):
    "The guide's `boxgen --max-images 100 --output test_boxes.json`: ./cirr_dataset, yolo, train."
    quick = ['boxgen', '--max-images', '2', '--output', 'test_boxes.json']
    small_cirr(tmp_path / 'cirr_dataset')
    rc, err, _ = fresh_main(quick, tmp_path)               # no yolov8n.pt: missing, not "trust it"
    assert rc == 1 and 'YOLO weights yolov8n.pt not found' in err and 'pickle' not in err, err
    (tmp_path / 'yolov8n.pt').write_bytes(b'')             # one that is there: refused before torch
    rc, err, torch_loaded = fresh_main(quick, tmp_path)
    assert (rc, torch_loaded) == (1, 'False') and 'YOLO weights are loaded with pickle' in err, err
    (tmp_path / 'yolov8n.pt').unlink()
    r = run(*quick, '--weights', 'yolov8n.yaml', '--allow-random-init', '--imgsz', '64', '--device', 'cpu',
            cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(json.loads((tmp_path / 'test_boxes.json').read_text())) == ['img0', 'img1']
    params = json.loads((tmp_path / 'test_boxes.meta.json').read_text())['params']
    assert (params['method'], params['split'], params['max_images']) == ('yolo', 'train', 2)


def test_python_m_runs_the_command(fixtures, tmp_path):
    "`python -m boxrefine ARGS` and `python -m boxrefine.cli ARGS` do what `boxrefine ARGS` does."
    def python_m(module, *args):
        return subprocess.run([sys.executable, '-m', module, *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
    c100 = fixtures / 'coco_val2014_100'
    evaluate = ['cocoeval', c100 / 'instances_val2014_100.json', c100 / 'instances_val2014_fakebbox100_results.json']
    tables = []
    for module in ('boxrefine', 'boxrefine.cli'):
        assert python_m(module, '--version').stdout == run('--version').stdout
        r = python_m(module, 'boxstats', 'none.json')
        assert (r.returncode, r.stderr) == (1, 'boxrefine boxstats: error: boxes file not found: none.json\n')
        r = python_m(module, *evaluate)
        assert r.returncode == 0 and 'AP' in r.stdout, r.stderr[-3000:]
        tables.append(r.stdout)
    assert tables[0] == tables[1]
