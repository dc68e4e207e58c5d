"""Region-loss benchmark: forward + backward time of `RegionLoss` for growing batches, side by side in one run.

Run: python bench/region.py [--repeats 5]
EVA ViT-g's shape at 224 px (CLS + 16x16 patch tokens of 1408 channels, queries of 256), 0-4 boxes per image, float32
on the CPU, for B = 32, 128, 512. With one roi_align call per batch and no per-image Python loop the time grows
linearly with B: the ms per image stays flat. The last line holds the figures.
"""
import argparse
import statistics
import time

import torch

from boxrefine.region import RegionLoss


def batch(B: int, g: torch.Generator):
    tokens = torch.randn(B, 257, 1408, generator=g, requires_grad=True)
    query = torch.randn(B, 256, generator=g, requires_grad=True)
    boxes = []
    for k in torch.randint(0, 5, (B,), generator=g).tolist():
        xy = torch.rand(k, 2, generator=g) * 160
        boxes.append(torch.cat([xy, xy + 16 + torch.rand(k, 2, generator=g) * 48], 1))
    return tokens, boxes, query


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    loss_fn = RegionLoss(1408, 256)
    g = torch.Generator().manual_seed(0)
    rows = []
    for B in (32, 128, 512):
        tokens, boxes, query = batch(B, g)
        times = []
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            loss = loss_fn(tokens, boxes, query); loss.backward()
            if r: times.append(time.perf_counter() - t0)   # the first run warms up
            tokens.grad = query.grad = None; loss_fn.zero_grad()
        ms = statistics.median(times) * 1e3
        rows.append((B, sum(len(b) for b in boxes), ms))
        print(f"B={B:4d}  boxes={rows[-1][1]:5d}  forward+backward {ms:8.2f} ms  ({ms / B:.3f} ms/image)")
    per_image = [ms / B for B, _, ms in rows]
    print(f"region: forward+backward ms " + ", ".join(f"B={B} {ms:.1f}" for B, _, ms in rows)
          + f"; ms/image {per_image[0]:.3f} -> {per_image[-1]:.3f} (512/32 time ratio {rows[-1][2] / rows[0][2]:.1f}x for 16x the batch)")


if __name__ == '__main__':
    main()
