"""COCO evaluation benchmark: `evaluate_detections` with faster-coco-eval against plain pycocotools, side by side.

Run: python bench/coco_eval.py [--repeats 7]
On the coco_val2014_100 fixture (100 images, 839 boxes, 734 official fake detections) it times
`boxrefine.detr.evaluate_detections(backend='faster')` (the default) against plain pycocotools `COCOeval`
(load, evaluate, accumulate, summarize) in one run, checks that the 12 statistics are identical, and prints the
speed ratio (target >= 3x). The last line holds the figures.
"""
import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from boxrefine.detr import evaluate_detections
from boxrefine.testing import fixtures_dir


def plain_pycocotools(gt: dict, dets: list) -> np.ndarray:
    "The usual pycocotools recipe, as users write it."
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(); coco_gt.dataset = json.loads(json.dumps(gt)); coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(dets))), 'bbox')
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return ev.stats


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter(); result = fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=7)
    args = ap.parse_args()
    folder = fixtures_dir() / 'coco_val2014_100'
    gt = json.loads((folder / 'instances_val2014_100.json').read_text())
    dets = json.loads((folder / 'instances_val2014_fakebbox100_results.json').read_text())
    timed(lambda: evaluate_detections(gt, dets, 'faster'), 1)  # warm-up: imports
    timed(lambda: plain_pycocotools(gt, dets), 1)
    t_fast, fast = timed(lambda: evaluate_detections(gt, dets, 'faster'), args.repeats)
    t_py, plain = timed(lambda: plain_pycocotools(gt, dets), args.repeats)
    t_ours_py, ours_py = timed(lambda: evaluate_detections(gt, dets, 'pycocotools'), args.repeats)
    diff = max(abs(a - b) for a, b in zip(fast.values(), plain))
    diff_py = max(abs(a - b) for a, b in zip(ours_py.values(), plain))
    print(f"images {len(gt['images'])}, ground-truth boxes {len(gt['annotations'])}, detections {len(dets)}, median of {args.repeats}")
    print(f"{'':34}{'seconds':>10}{'AP':>10}")
    print(f"{'evaluate_detections (faster)':34}{t_fast:10.4f}{fast['AP']:10.4f}")
    print(f"{'evaluate_detections (pycocotools)':34}{t_ours_py:10.4f}{ours_py['AP']:10.4f}")
    print(f"{'plain pycocotools COCOeval':34}{t_py:10.4f}{plain[0]:10.4f}")
    print(f"coco_eval: faster {t_fast * 1e3:.1f} ms vs pycocotools {t_py * 1e3:.1f} ms = {t_py / t_fast:.1f}x faster "
          f"(target >= 3x); max |stat difference| {diff:.1e} (pycocotools backend {diff_py:.1e})")


if __name__ == '__main__':
    main()
