"""Box-generation benchmark: saliency against decoding alone, memory for 2,000 images against 200, yolo through boxgen
against a bare ultralytics predict. All side by side in one run, on stand-in PNGs at the real CIRR val split's paths.

Run: python bench/boxgen.py [--images 200] [--yolo-images 48]
Targets: saliency (decode included) at most 2x the time of decoding the same images alone; peak memory of a 2,000-image
run within 1.2x of a 200-image run (the run streams); yolo through `generate_boxes` at most 1.15x a bare
`YOLO.predict(stream=True)` over the same files with the same model. The last line holds the figures.
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

from boxrefine.boxgen import cirr_images, generate_boxes, load_yolo
from boxrefine.testing import fixtures_dir


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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        root = make_root(tmp / 'cirr', args.images, 2000)
        paths = list(cirr_images(root, 'val', args.images).values())
        for p in paths: p.read_bytes()  # warm the page cache for both sides
        t0 = time.perf_counter()
        for p in paths: cv2.imread(str(p), cv2.IMREAD_COLOR)
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
    print(f"{'decode alone (cv2.imread, 500x375)':36}{t_decode / n * 1e3:10.2f}{n / t_decode:10.1f}")
    print(f"{'saliency boxgen (decode included)':36}{t_sal / n * 1e3:10.2f}{n / t_sal:10.1f}")
    print(f"{'bare YOLO.predict (yolov8n, 640)':36}{t_bare / args.yolo_images * 1e3:10.2f}{args.yolo_images / t_bare:10.1f}")
    print(f"{'yolo boxgen':36}{t_yolo / args.yolo_images * 1e3:10.2f}{args.yolo_images / t_yolo:10.1f}")
    print(f"peak memory: 200 images {mem_small:.0f} MB, 2000 images {mem_large:.0f} MB")
    print(f"boxgen: saliency {n / t_sal:.0f} img/s = {t_sal / t_decode:.2f}x decode time (target <= 2x); "
          f"memory 2000/200 = {mem_large / mem_small:.2f}x (target <= 1.2x); "
          f"yolo boxgen/bare predict = {t_yolo / t_bare:.2f}x (target <= 1.15x)")


if __name__ == '__main__':
    main()
