"`boxrefine boxgen` and `boxstats` end to end on stand-in PNGs at the real CIRR val split's paths: keys, kill and resume, yolo."
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw


def boxrefine(*args, check=True, cwd=None):
    r = subprocess.run([shutil.which('boxrefine'), *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)
    if check: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def cirr(fixtures, tmp_path_factory):
    "A CIRR root in SPRC's layout: the real val split file, stand-in PNGs for its first 300 images."
    root = tmp_path_factory.mktemp('cirr')
    split = json.loads((fixtures / 'cirr_rc2' / 'split.rc2.val.json').read_text())
    (root / 'cirr' / 'image_splits').mkdir(parents=True)
    (root / 'cirr' / 'image_splits' / 'split.rc2.val.json').write_text(json.dumps(split))
    rng = np.random.default_rng(0)
    for name, rel in list(split.items())[:300]:
        path = root / rel; path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray((rng.random((72, 96, 3)) * 40 + 180).astype(np.uint8))
        x, y = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        ImageDraw.Draw(im).ellipse((x, y, x + 30, y + 25), fill=tuple(int(c) for c in rng.integers(0, 120, 3)))
        im.save(path)
    return root, list(split)


def test_keys_are_the_split_names(cirr, tmp_path):
    root, names = cirr
    boxrefine('boxgen', '--cirr-root', root, '--method', 'saliency', '--split', 'val', '--max-images', 40, '--output', tmp_path / 'b.json')
    boxes = json.loads((tmp_path / 'b.json').read_text())
    assert list(boxes) == names[:40]
    meta = json.loads((tmp_path / 'b.meta.json').read_text())
    assert meta['complete'] and meta['failed'] == {} and meta['params']['method'] == 'saliency'
    r = boxrefine('boxstats', tmp_path / 'b.json', '--show', 2, '--out', tmp_path / 'show')
    assert 'images 40, with boxes' in r.stdout and len(list((tmp_path / 'show').glob('*.png'))) == 2


def test_all_splits_needs_every_split_file(cirr, tmp_path):
    root, _ = cirr
    r = boxrefine('boxgen', '--cirr-root', root, '--method', 'saliency', '--all-splits', '--output', tmp_path, check=False)
    assert r.returncode == 1 and 'split.rc2.train.json' in r.stderr


def test_killed_run_resumes_to_the_same_file(cirr, tmp_path):
    root, _ = cirr
    args = ['boxgen', '--cirr-root', root, '--method', 'saliency', '--split', 'val', '--max-images', 300, '--save-every', 20,
            '--batch-size', 4]
    boxrefine(*args, '--output', tmp_path / 'full.json')
    out = tmp_path / 'killed.json'
    proc = subprocess.Popen([shutil.which('boxrefine'), *map(str, args), '--output', str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    partial = json.loads(out.read_text())       # whatever was written is a whole, valid file
    assert 0 < len(partial) < 300, f"the kill came too late to test anything ({len(partial)} images done)"
    r = boxrefine(*args, '--output', out)
    assert f'resuming {out}: {len(partial)} of 300' in r.stdout
    assert out.read_bytes() == (tmp_path / 'full.json').read_bytes()


def test_yolo_end_to_end_and_missing_weights(cirr, tmp_path):
    root, names = cirr
    common = ['boxgen', '--cirr-root', root, '--split', 'val', '--max-images', 10, '--device', 'cpu', '--imgsz', 128]
    r = boxrefine(*common, '--method', 'yolo', '--output', tmp_path / 'y.json', '--weights', tmp_path / 'yolov8n.pt', check=False)
    assert r.returncode == 1 and 'pass --weights PATH' in r.stderr and 'yolov8n.pt' in r.stderr
    boxrefine(*common, '--method', 'yolo', '--weights', 'yolov8n.yaml', '--allow-random-init', '--conf', 0.001,
              '--batch-size', 3, '--output', tmp_path / 'y.json')
    boxes = json.loads((tmp_path / 'y.json').read_text())
    assert list(boxes) == names[:10] and all(b['source'] == 'yolo' for v in boxes.values() for b in v)
    assert json.loads((tmp_path / 'y.meta.json').read_text())['random_init'] is True
