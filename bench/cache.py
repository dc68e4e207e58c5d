"""Feature-cache benchmark: cold (extract + store) against warm (load) per image, load against a plain read.

Run: python bench/cache.py [--images 16] [--model-type vit_tiny]
On 16 images with vit_tiny on the CPU it prints, side by side in one run: cold and warm time per image and their
ratio (target >= 100x), warm load time against a plain read of the same files' bytes (target <= 2x), and bytes per
image on disk (target <= 3.5 MB for vit_tiny in float16). The last line holds the figures.
"""
import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from boxrefine.cache import content_key
from boxrefine.features import HQSAMFeatures, cache_for
from boxrefine.precompute import extract_with_cache


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    "n distinct 640x480 JPEGs (textured noise with a few rectangles)."
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((480, 640, 3)) * 80 + rng.integers(0, 150, 3)).astype(np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, 500), rng.integers(0, 350)
            arr[y:y + rng.integers(30, 130), x:x + rng.integers(30, 140)] = rng.integers(0, 255, 3)
        paths.append(folder / f"img_{i:03d}.jpg")
        Image.fromarray(arr).save(paths[-1], quality=90)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=16)
    ap.add_argument('--model-type', default='vit_tiny')
    ap.add_argument('--batch-size', type=int, default=4)
    ap.add_argument('--repeats', type=int, default=20, help='warm passes (the median is reported)')
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, {args.model_type}")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tmp = Path(tmp)
        paths = make_images(tmp, args.images)
        extractor = HQSAMFeatures(args.model_type, allow_random_init=True, seed=0)
        cache = cache_for(extractor, tmp / 'cache', 'bench')
        keys = [content_key(p) for p in paths]

        t0 = time.perf_counter()
        extract_with_cache(extractor, cache, paths, args.batch_size, keys=keys)
        cold = (time.perf_counter() - t0) / len(paths)

        def timed(fn):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
            return statistics.median(times) / len(paths)
        files = [cache.path_for(k) for k in keys]
        plain = timed(lambda: [f.read_bytes() for f in files])
        warm_stored = timed(lambda: [cache.get(k) for k in keys])                       # storage dtype (float16)
        warm_f32 = timed(lambda: [cache.get(k, dtype=torch.float32) for k in keys])      # what training asks for
        warm_full = timed(lambda: extract_with_cache(extractor, cache, paths, keys=None))  # incl. content hashing
        assert cache.stats.corrupt == 0 and cache.stats.hits >= 3 * args.repeats * len(paths)
        per_image = sum(f.stat().st_size for f in files) / len(files)

    ms = lambda s: f"{s * 1e3:.2f} ms"
    print(f"cold (extract + store)        {ms(cold)}/image")
    print(f"plain read of the entry bytes {ms(plain)}/image  ({per_image / plain / 2**30:.2f} GiB/s)")
    print(f"warm get, float16             {ms(warm_stored)}/image  = {warm_stored / plain:.2f}x plain read")
    print(f"warm get, float32             {ms(warm_f32)}/image  = {warm_f32 / plain:.2f}x plain read")
    print(f"warm extract_with_cache       {ms(warm_full)}/image  (content hash of the image + get, float32)")
    print(f"bytes per image on disk       {per_image / 1e6:.2f} MB")
    print(f"RESULT cold/warm={cold / warm_full:.0f}x (target >=100x) load/plain={warm_stored / plain:.2f}x "
          f"(target <=2x) bytes/image={per_image / 1e6:.2f}MB (target <=3.5MB) cold={ms(cold)} warm={ms(warm_full)}")


if __name__ == '__main__':
    main()
