"""Does the refiner spoil good boxes, does it know its own quality, does it find wrong labels?

Run: python bench/refine_quality.py [--run boxrefine_demo] [--epochs 60] [--seed 0]
Uses a finished demo run (made first with `boxrefine demo` settings when --run does not exist; --seed
draws the demo's data, noise and initial weights) and
reports, side by side in one run:
- validation IoU by input-IoU bucket before/after (targets: >= 0.9 loses at most 0.005, 0.5-0.7
  gains at least 0.07, overall gain at least 0.08) and the quality head's Spearman rho (>= 0.7);
- `refine` on jittered detections of the validation images: AP at every IoU threshold 0.50..0.95
  before/after (no threshold loses more than 0.005; AP75 gains at least 0.15), with --rescore beside;
  the gate switched off (margin -1, every step kept) beside it, as the old refiner behaved;
- protocols not tuned on: only small jitter (2-5%), only large jitter (30-40%), one box per image;
- audit: 10% of the validation boxes moved by 20-40% of their size (seeded): the share of moved
  boxes among the top k of the ranking, k = the number moved (target >= 0.8).
The last line holds the figures.
"""
import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from boxrefine.audit import audit_annotations
from boxrefine.boxes import convert_boxes, jitter_boxes
from boxrefine.demo import run_demo
from boxrefine.detr import coco_evaluation
from boxrefine.refine import image_index, refine_detections
from boxrefine.refiner import load_run

THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def ap_by_threshold(gt: dict, dets: list[dict]) -> list[float]:
    "AP (all areas, 100 detections) at each IoU threshold, from COCOeval's precision array."
    p = coco_evaluation(gt, dets).eval['precision'][:, :, :, 0, -1]
    return [float(np.mean(p[t][p[t] > -1])) if (p[t] > -1).any() else float('nan')
            for t in range(len(THRESHOLDS))]


def jittered(gt: dict, levels, seed: int, per_image: int | None = None) -> list[dict]:
    "Stand-in detections: each ground-truth box jittered at one of `levels` (seeded scores)."
    g, sizes = torch.Generator().manual_seed(seed), {im['id']: (im['width'], im['height']) for im in gt['images']}
    dets, seen = [], {}
    for k, a in enumerate(gt['annotations']):
        seen[a['image_id']] = seen.get(a['image_id'], 0) + 1
        if per_image and seen[a['image_id']] > per_image: continue
        xyxy = convert_boxes(torch.tensor(a['bbox'], dtype=torch.float64), 'xywh', 'xyxy')
        noisy = jitter_boxes(xyxy[None], levels[k % len(levels)], size=sizes[a['image_id']], generator=g)[0]
        dets.append({'image_id': a['image_id'], 'category_id': a['category_id'],
                     'bbox': [round(v, 3) for v in convert_boxes(noisy, 'xyxy', 'xywh').tolist()],
                     'score': round(0.5 + 0.5 * torch.rand((), generator=g).item(), 4)})
    return dets


def moved_labels(gt: dict, share: float = 0.1, seed: int = 0) -> tuple[dict, set]:
    "`gt` with `share` of its boxes shifted by 20-40% of their size (seeded), and their ids."
    rng, out = random.Random(seed), json.loads(json.dumps(gt))
    anns = out['annotations']
    moved = set(rng.sample([a['id'] for a in anns], max(1, round(share * len(anns)))))
    for a in anns:
        if a['id'] not in moved: continue
        x, y, w, h = a['bbox']
        fx, fy = (rng.uniform(0.2, 0.4) * rng.choice((-1, 1)) for _ in range(2))
        a['bbox'] = [x + fx * w, y + fy * h, w, h]
    return out, moved


def refine_row(run, images, gt, dets, margin=None) -> dict:
    got = refine_detections(run, images, dets, gt=gt, margin=margin, progress=False)
    ev = got['report']['evaluation']
    return {'before': ap_by_threshold(gt, dets), 'after': ap_by_threshold(gt, got['detections']),
            'AP': (ev['before']['AP'], ev['after']['AP']),
            'AP_rescored': ev['after'].get('AP') if 'after_rescored' not in ev else ev['after_rescored']['AP'],
            'buckets': ev['buckets'], 'calibration': ev['calibration'], 'boxes_per_s': got['report']['boxes_per_s']}


def show_ap(name: str, row: dict):
    worst = min(a - b for a, b in zip(row['after'], row['before']))
    print(f"{name:<28} AP {row['AP'][0]:.3f} -> {row['AP'][1]:.3f} (rescored {row['AP_rescored']:.3f}); "
          f"AP75 {row['before'][5]:.3f} -> {row['after'][5]:.3f}; worst threshold change {worst:+.3f}")
    print('   thr  ' + ' '.join(f"{t:>6.2f}" for t in THRESHOLDS))
    print('   in   ' + ' '.join(f"{v:>6.3f}" for v in row['before']))
    print('   out  ' + ' '.join(f"{v:>6.3f}" for v in row['after']))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', default='boxrefine_demo')
    ap.add_argument('--epochs', type=int, default=90)
    ap.add_argument('--seed', type=int, default=0, help="the demo's seed (a new run only)")
    args = ap.parse_args()
    run_dir = Path(args.run)
    if not (run_dir / 'best.pt').is_file(): run_demo(run_dir, epochs=args.epochs, seed=args.seed)
    report = json.loads((run_dir / 'report.json').read_text())
    run = load_run(run_dir)
    gt = json.loads((run_dir / 'data' / 'val.json').read_text())
    images = run_dir / 'data' / 'images'

    print("validation (the demo's fixed noise), IoU by input IoU:")
    for b in report['val_iou_buckets']:
        print(f"  {b['input_iou']:>8} {b['boxes']:>4} boxes  {b['iou_before'] or float('nan'):.3f} -> "
              f"{b['iou_after'] or float('nan'):.3f}  ({(b['gain'] or 0):+.3f})")
    gain, rho = report['iou_gain'], report['iou_spearman']
    print(f"  overall {report['noisy_iou']:.3f} -> {report['refined_iou']:.3f} ({gain:+.3f}); "
          f"quality head Spearman {rho}")

    from boxrefine.refine import NOISE_LEVELS
    rows = {'jittered (demo protocol)': refine_row(run, images, gt, jittered(gt, NOISE_LEVELS, 0))}
    rows['same, gate off (margin -1)'] = refine_row(run, images, gt, jittered(gt, NOISE_LEVELS, 0), margin=-1.0)
    rows['small jitter 2-5%'] = refine_row(run, images, gt, jittered(gt, (0.02, 0.03, 0.05), 1))
    rows['large jitter 30-40%'] = refine_row(run, images, gt, jittered(gt, (0.3, 0.35, 0.4), 2))
    rows['one box per image'] = refine_row(run, images, gt, jittered(gt, NOISE_LEVELS, 3, per_image=1))
    worst = {name: show_ap(name, row) for name, row in rows.items()}
    print("the gate's margin against the protocols (AP75 change / worst threshold change / >= 0.9):")
    for m in (0.005, 0.02, 0.04, 0.08):
        d = refine_row(run, images, gt, jittered(gt, NOISE_LEVELS, 0), margin=m)
        small = refine_row(run, images, gt, jittered(gt, (0.02, 0.03, 0.05), 1), margin=m)
        ge = next(b for b in d['buckets'] if b['input_iou'] == '>= 0.9')
        w = lambda r: min(a - b for a, b in zip(r['after'], r['before']))
        print(f"  margin {m:<5}: demo AP75 {d['after'][5] - d['before'][5]:+.3f}, worst {w(d):+.3f}, "
              f">= 0.9 {ge['iou_before']:.3f} -> {ge['iou_after']:.3f}; small jitter worst {w(small):+.3f}")
    demo = rows['jittered (demo protocol)']
    for b in demo['buckets']:
        print(f"  refine buckets {b['input_iou']:>8} {b['boxes']:>4}: {b['iou_before'] or float('nan'):.3f} -> "
              f"{b['iou_after'] or float('nan'):.3f}")
    print(f"  refine calibration: {demo['calibration']['all']}")

    shares = []
    for seed in range(5):                 # five seeded draws: one draw of 5 moved boxes is noisy
        wrong, moved = moved_labels(gt, 0.1, seed=seed)
        audit = audit_annotations(run, wrong, images, progress=False)
        top = [r['annotation_id'] for r in audit['annotations'][:len(moved)]]
        shares.append(len(set(top) & moved) / len(moved))
    found = sum(shares) / len(shares)
    print(f"audit: {len(moved)} of {len(gt['annotations'])} boxes moved; share of them in the top "
          f"{len(moved)}: {found:.2f} (mean of 5 draws: {', '.join(f'{s:.1f}' for s in shares)})")
    ge9 = next(b for b in report['val_iou_buckets'] if b['input_iou'] == '>= 0.9')
    d75 = demo['after'][5] - demo['before'][5]
    print(f"random_init={report['random_init']}; val >= 0.9 change {ge9['gain']}, overall gain {gain:+.3f}, "
          f"spearman {rho}, refine worst AP change {worst['jittered (demo protocol)']:+.3f}, "
          f"AP75 {d75:+.3f}, audit top-k share {found:.2f}")


if __name__ == '__main__':
    main()
