"""Box-generation benchmark, side by side in one run: the object-level saliency method against the old spectral residual
on real photos (quality, speed on one core, memory), saliency boxgen's memory for 2,000 images against 200, and yolo
through boxgen against a bare ultralytics predict.

Run: python bench/boxgen.py [--images 200] [--yolo-images 48] [--repeat 3]
Quality: the 15 real photos of tests/fixtures/photos with their hand-checked main-object boxes: mean best IoU, recall
at IoU 0.5, mean IoU of the first box, and a whole-frame box as the baseline. Targets (issue 14): new method mean
best IoU >= 0.7, recall at 0.5 >= 0.8, >= 10 images/s on one core on 500x400 photos, memory flat in the number of
images (2,000-image run within 1.2x of a 200-image run); yolo through `generate_boxes` at most 1.15x a bare
`YOLO.predict(stream=True)`. The last line holds the figures.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault('YOLO_OFFLINE', '1')
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import torch

from boxrefine.boxgen import cirr_images, generate_boxes, load_yolo, read_image
from boxrefine.saliency import main_object_iou, saliency_boxes, spectral_residual_boxes
from boxrefine.testing import fixtures_dir

METHODS = {'old (spectral residual)': spectral_residual_boxes, 'new (object-level)': saliency_boxes}


def photo_quality(photos: Path) -> dict:
    "Per method (and a whole-frame box): mean best IoU, recall at 0.5, mean first-box IoU, boxes per photo."
    truth = json.loads((photos / 'main_objects.json').read_text())
    images = {n: read_image(photos / n) for n in truth}
    whole = lambda img: [{'xyxy': [0, 0, img.shape[1], img.shape[0]]}]
    out = {}
    for name, fn in {**METHODS, 'whole frame (baseline)': whole}.items():
        found = {n: fn(img) for n, img in images.items()}
        first, best = map(np.array, zip(*(main_object_iou(found[n], truth[n]['main']) for n in truth)))
        out[name] = {'best': best.mean(), 'recall': (best >= 0.5).mean(), 'first': first.mean(),
                     'boxes': np.mean([len(b) for b in found.values()]), 'per_photo': dict(zip(truth, best))}
    return out


def photo_speed(photos: Path, repeat: int) -> dict:
    "Images/s on one core (cv2 and torch on one thread) and tracemalloc peak MiB, per method, on 500x400 photos."
    import tracemalloc
    truth = json.loads((photos / 'main_objects.json').read_text())
    images = [cv2.resize(read_image(photos / n), (500, 400), interpolation=cv2.INTER_AREA) for n in truth]
    out = {}
    for name, fn in METHODS.items():
        fn(images[0])                                       # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            for img in images: fn(img)
        n = repeat * len(images)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tracemalloc.start()
        for img in images: fn(img)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out[name] = {'wall': n / wall, 'cpu': n / cpu, 'peak_mib': peak}
    return out


def make_root(root: Path, n_unique: int, n_total: int, seed: int = 0) -> Path:
    "SPRC layout with the real val split; n_unique stand-in PNGs (500x375, shapes on a textured gradient), hard-linked up to n_total."
    split = json.loads((fixtures_dir() / 'cirr_rc2' / 'split.rc2.val.json').read_text())
    (root / 'cirr' / 'image_splits').mkdir(parents=True)
    (root / 'cirr' / 'image_splits' / 'split.rc2.val.json').write_text(json.dumps(split))
    rng = np.random.default_rng(seed)
    items = list(split.items())[:n_total]
    for i, (name, rel) in enumerate(items):
        path = root / rel; path.parent.mkdir(parents=True, exist_ok=True)
        if i >= n_unique: os.link(root / items[i % n_unique][1], path); continue
        base = np.linspace(0, 1, 500)[None, :, None] * rng.integers(-80, 80, 3) + rng.integers(60, 200, 3)
        arr = np.clip(base + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = int(rng.integers(0, 400)), int(rng.integers(0, 280)), int(rng.integers(40, 160)), int(rng.integers(40, 120))
            d.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        im.save(path)
    return root


def peak_rss_mb(root: Path, n: int, out: Path) -> float:
    "Peak resident memory of a fresh process running saliency boxgen over n images."
    code = ("import resource, sys; from boxrefine.boxgen import generate_boxes; "
            f"generate_boxes({str(root)!r}, 'val', 'saliency', {str(out)!r}, max_images={n}, save_every=500, progress=False); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=200)
    ap.add_argument('--yolo-images', type=int, default=48)
    ap.add_argument('--repeat', type=int, default=3, help='passes over the photos for the speed figures')
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    photos = fixtures_dir() / 'photos'
    quality, speed = photo_quality(photos), photo_speed(photos, args.repeat)
    print(f"real photos ({len(next(iter(quality.values()))['per_photo'])}, tests/fixtures/photos), one core:")
    print(f"{'':26}{'best IoU':>9}{'recall@.5':>10}{'first IoU':>10}{'boxes':>7}{'img/s':>7}{'cpu img/s':>10}"
          f"{'peak MiB':>9}")
    for name, q in quality.items():
        sp = speed.get(name)
        tail = f"{sp['wall']:7.1f}{sp['cpu']:10.1f}{sp['peak_mib']:9.2f}" if sp else ''
        print(f"{name:26}{q['best']:9.3f}{q['recall']:10.2f}{q['first']:10.3f}{q['boxes']:7.1f}{tail}")
    old, new = (quality[k] for k in METHODS)
    print("per photo, best IoU old -> new: " + ", ".join(
        f"{n.split('.')[0]} {old['per_photo'][n]:.2f}->{new['per_photo'][n]:.2f}" for n in new['per_photo']))
    tmp = Path(tempfile.mkdtemp())
    try:
        root = make_root(tmp / 'cirr', args.images, 2000)
        paths = list(cirr_images(root, 'val', args.images).values())
        for p in paths: p.read_bytes()  # warm the page cache
        t0 = time.perf_counter()
        for p in paths: read_image(p)
        t_decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate_boxes(root, 'val', 'saliency', tmp / 'sal.json', max_images=args.images, progress=False)
        t_sal = time.perf_counter() - t0
        mem_small, mem_large = peak_rss_mb(root, 200, tmp / 'm200.json'), peak_rss_mb(root, 2000, tmp / 'm2000.json')

        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model, _ = load_yolo('yolov8n.yaml', allow_random_init=True)
        ypaths = [str(p) for p in paths[:args.yolo_images]]
        list(model.predict(ypaths[:4], device='cpu', verbose=False))  # warm-up: builds the predictor
        t0 = time.perf_counter()
        n_bare = sum(1 for _ in model.predict(ypaths, stream=True, batch=16, conf=0.25, imgsz=640, device='cpu', verbose=False))
        t_bare = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            t0 = time.perf_counter()
            generate_boxes(root, 'val', 'yolo', tmp / 'yolo.json', max_images=args.yolo_images, weights='yolov8n.yaml',
                           allow_random_init=True, batch_size=16, conf=0.25, imgsz=640, device='cpu', progress=False)
            t_yolo = time.perf_counter() - t0
        assert n_bare == args.yolo_images
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = args.images
    print(f"{'':36}{'ms/image':>10}{'images/s':>10}")
    print(f"{'decode alone (read_image, 500x375)':36}{t_decode / n * 1e3:10.2f}{n / t_decode:10.1f}")
    print(f"{'saliency boxgen (decode included)':36}{t_sal / n * 1e3:10.2f}{n / t_sal:10.1f}")
    print(f"{'bare YOLO.predict (yolov8n, 640)':36}{t_bare / args.yolo_images * 1e3:10.2f}{args.yolo_images / t_bare:10.1f}")
    print(f"{'yolo boxgen':36}{t_yolo / args.yolo_images * 1e3:10.2f}{args.yolo_images / t_yolo:10.1f}")
    print(f"peak memory: 200 images {mem_small:.0f} MB, 2000 images {mem_large:.0f} MB")
    ko, kn = METHODS
    print(f"boxgen: new/old mean best IoU {new['best']:.3f}/{old['best']:.3f} = {new['best'] / old['best']:.2f}x "
          f"(target new >= 0.7), recall@0.5 {new['recall']:.2f}/{old['recall']:.2f} (target new >= 0.8), "
          f"first-box IoU {new['first']:.3f} vs whole frame {quality['whole frame (baseline)']['first']:.3f}; "
          f"one core on 500x400: new {speed[kn]['cpu']:.1f} img/s (target >= 10), "
          f"new/old time {speed[ko]['cpu'] / speed[kn]['cpu']:.2f}x, peak memory new/old "
          f"{speed[kn]['peak_mib'] / speed[ko]['peak_mib']:.2f}x; saliency boxgen {n / t_sal:.0f} img/s "
          f"= {t_sal / t_decode:.2f}x decode time; memory 2000/200 images = {mem_large / mem_small:.2f}x "
          f"(target <= 1.2x); yolo boxgen/bare predict = {t_yolo / t_bare:.2f}x (target <= 1.15x)")


if __name__ == '__main__':
    main()
