"""Precompute benchmark: the encoder's speed per precision and attention, and the feed against the disk.

Run: python bench/precompute.py [--device cpu|cuda] [--images 2] [--rounds 5] [--feed-images 128]
Two parts, each measured side by side in one run (the phases alternate round by round, in a new
order each round; ratios are medians of the ratios within each round):
1. encoder (`vit_tiny` on the CPU, `vit_h` with --device cuda; random weights, a few small JPEGs):
   - plain: the loop a user writes, `SamPredictor.set_image` per image, then `torch.save` of its
     `features` and `interm_features`;
   - fp32: the package's `precompute` in float32 with SAM's own attention;
   - fp32+sdpa: float32 with fused attention (`scaled_dot_product_attention`);
   - bf16+sdpa: bfloat16 autocast with fused attention;
   - bf16+sdpa+compile (with --compile): the same through `torch.compile`.
2. feed: `precompute` with the encoder replaced by a stand-in that costs nothing and returns
   `vit_h`-shaped float16 outputs (image embedding 256x64x64, early ViT feature 64x64x1280), so that
   only decoding, the copy to the host and the writer threads remain; against `write`: the same number
   of same-size files written by as many threads with the cache's own atomic write (temporary file,
   fsync, rename). Target: feed/write >= 0.8. Beside it, the CPU time an image costs in each
   (decoding workers included) and the CPU's own limit: the cores over the feed's CPU per image.
The last line: `feed/write = F, bf16/fp32 = S, img/s = N (device)`, with S the fused bf16 over the
fused fp32 rate and N the rate of what precision 'auto' picks on the device (with fused attention).
"""
import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from boxrefine.atomic import atomic_write_bytes
from boxrefine.cache import FeatureCache
from boxrefine.features import (CHANNEL_AXES, HQSAMFeatures, build_hqsam, cache_for, feature_layout,
                                load_image, resolve_precision)
from boxrefine.precompute import precompute

VIT_H_INTERM = 1280


def make_images(folder: Path, n: int, size=(640, 480), seed: int = 0) -> list[Path]:
    "n distinct JPEGs with texture (gradients and noise), as photographs cost to decode."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.3, 1, h)[:, None, None]
    paths = []
    for i in range(n):
        noise = rng.normal(0, 25, (h, w, 3))
        arr = np.clip(ramp * [1, 0.5 + i / (2 * n), 0.7] + noise, 0, 255).astype(np.uint8)
        paths.append(folder / f'{i:05d}.jpg')
        Image.fromarray(arr).save(paths[-1], quality=90)
    return paths


def plain_loop(sam, paths: list[Path], out: Path) -> float:
    "Seconds for what a user writes: `SamPredictor.set_image` per image, then `torch.save`."
    from segment_anything_hq import SamPredictor
    predictor = SamPredictor(sam)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for p in paths:
        predictor.set_image(np.asarray(Image.open(p).convert('RGB')))
        torch.save({'features': predictor.features.cpu(),
                    'interm_features': predictor.interm_features[0].cpu()}, out / f'{p.stem}.pt')
    if sam.device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - start


def encoder_configs(args) -> dict:
    "name -> keyword arguments of `HQSAMFeatures` for each configuration measured."
    configs = {'fp32': dict(precision='fp32', fused_attention=False),
               'fp32+sdpa': dict(precision='fp32'),
               'bf16+sdpa': dict(precision='bf16')}
    if args.compile: configs['bf16+sdpa+compile'] = dict(precision='bf16', compile_encoder=True)
    return configs


def encoder_part(args, tmp: Path) -> dict:
    "img/s of the plain loop and of each configuration, per round; the figures of the last round."
    paths = make_images(tmp / 'small', args.images)
    common = dict(model_type=args.model_type, allow_random_init=True, seed=0, device=args.device)
    sam = build_hqsam(args.model_type, allow_random_init=True, seed=0)[0].to(args.device)
    extractors = {name: HQSAMFeatures(**common, **kw) for name, kw in encoder_configs(args).items()}
    warm = [load_image(paths[0])]
    plain_loop(sam, paths[:1], tmp / 'warm')                          # one-time costs, not timed
    for ex in extractors.values(): ex.extract(warm)
    rates, figures = {'plain': [], **{k: [] for k in extractors}}, {}
    names = list(rates)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:   # a new order each round
            if name == 'plain':
                rates['plain'].append(len(paths) / plain_loop(sam, paths, tmp / f'plain{r}'))
                continue
            ex = extractors[name]
            cache = cache_for(ex, tmp / f'cache{r}' / name, 'bench')   # fp32 twice: one fingerprint
            s = precompute(ex, cache, paths, batch_size=args.batch_size, progress=False)
            assert s['extracted'] == len(paths) and not s['failed'], s
            rates[name].append(s['images_per_s'])
            figures[name] = s
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in rates.items())
              + " img/s")
        shutil.rmtree(tmp / f'cache{r}')
        shutil.rmtree(tmp / f'plain{r}')
    return {'rates': rates, 'figures': figures}


class StandIn(torch.nn.Module):
    "An encoder that costs nothing: `vit_h`-shaped float16 outputs, the same buffers every call."
    def __init__(self, batch_size: int, device):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embedding = torch.randn(batch_size, 256, 64, 64, generator=g).half().to(device)
        self.interm = torch.randn(batch_size, 64, 64, VIT_H_INTERM, generator=g).half().to(device)

    def forward(self, x):
        return self.embedding[:len(x)], [self.interm[:len(x)]]


class VitHShaped(HQSAMFeatures):
    "A `vit_tiny` extractor whose encoder is the stand-in: the feed alone, sized as `vit_h`'s."
    interm_dim = VIT_H_INTERM

    def __init__(self, batch_size: int, device):
        super().__init__('vit_tiny', allow_random_init=True, device=device, precision='fp32')
        self.encoder = StandIn(batch_size, self.device)

    def entry_bytes(self, cache: FeatureCache) -> int:
        "Bytes of one entry of the stand-in's outputs (`feature_layout` reads vit_tiny's model)."
        interm = (torch.float32, (64, 64, VIT_H_INTERM))
        layout = {**feature_layout(self), 'interm_embedding': interm}
        zeros = {n: torch.zeros(s, dtype=t) for n, (t, s) in layout.items()}
        return len(cache.encode('0' * 32, zeros))


def parallel_write(folder: Path, data: bytes, n: int, threads: int) -> float:
    "Seconds for `threads` threads to write n files of `data` as the cache does (atomic, fsync)."
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: atomic_write_bytes(folder / f'{i % 256:02x}' / f'{i:032x}', data),
                      range(n)))
    return time.perf_counter() - start


def cpu_seconds() -> float:
    "CPU seconds (user + system) of this process, its threads and its finished children so far."
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def feed_part(args, tmp: Path) -> dict:
    "MB/s of the feed (stand-in encoder) and of the parallel write of the same bytes, per round."
    paths = make_images(tmp / 'feed_images', args.feed_images, size=(1024, 768), seed=1)
    ex = VitHShaped(args.feed_batch, args.device)
    probe = FeatureCache(tmp / 'probe', 'vit_h-standin', 'bench', channel_axes=CHANNEL_AXES)
    size = ex.entry_bytes(probe)
    data = bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))
    rates, cpu = {'write': [], 'feed': []}, {'write': [], 'feed': []}
    for r in range(args.rounds_feed):
        for phase in ('write', 'feed'):
            folder = tmp / f'{phase}{r}'
            cpu0 = cpu_seconds()
            if phase == 'write':
                s = parallel_write(folder, data, len(paths), args.writers)
            else:
                cache = FeatureCache(folder, 'vit_h-standin', 'bench', channel_axes=CHANNEL_AXES)
                got = precompute(ex, cache, paths, batch_size=args.feed_batch, progress=False,
                                 writers=args.writers, workers=args.workers)
                assert got['extracted'] == len(paths), got
                assert cache.stats.bytes_written == size * len(paths), (cache.stats, size)
                s = got['seconds']
            rates[phase].append(size * len(paths) / s / 1e6)
            cpu[phase].append((cpu_seconds() - cpu0) / len(paths))   # the decoders included
            shutil.rmtree(folder)
        print(f"round {r + 1}: write {rates['write'][-1]:,.0f} MB/s, "
              f"feed {rates['feed'][-1]:,.0f} MB/s ({len(paths)} entries of "
              f"{size / 2**20:.2f} MiB)")
    return {'rates': rates, 'cpu': cpu, 'entry_bytes': size}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu', help='cpu, or cuda (vit_h there)')
    ap.add_argument('--model-type', help='encoder of part 1 (default: vit_tiny on the CPU, '
                                          'vit_h on a GPU)')
    ap.add_argument('--images', type=int, default=2, help='images of part 1 (default: 2)')
    ap.add_argument('--batch-size', type=int, default=2, help='batch of part 1 (default: 2)')
    ap.add_argument('--rounds', type=int, default=5, help='rounds of part 1 (default: 5)')
    ap.add_argument('--compile', action='store_true', help='also measure torch.compile')
    # 128 images: the feed's fill and drain (a batch decoded before the first write, the last
    # writes after the last decode) stay a small part of a round; 5 rounds: the disk itself swings
    ap.add_argument('--feed-images', type=int, default=128, help='images of part 2 (default: 128)')
    ap.add_argument('--feed-batch', type=int, default=8, help='batch of part 2 (default: 8)')
    ap.add_argument('--rounds-feed', type=int, default=5, help='rounds of part 2 (default: 5)')
    ap.add_argument('--writers', type=int, default=4, help='writer threads (default: 4)')
    ap.add_argument('--workers', type=int, default=None, help='decoding workers (default: '
                                                              'from the CPUs)')
    ap.add_argument('--skip-encoder', action='store_true', help='part 2 only')
    ap.add_argument('--dir', help='where to write (default: a temporary folder)')
    args = ap.parse_args()
    args.model_type = args.model_type or ('vit_h' if args.device.startswith('cuda') else 'vit_tiny')
    device = (torch.cuda.get_device_name(args.device) if args.device.startswith('cuda')
              else f"cpu, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {device}; part 1: "
          f"{args.model_type}, {args.images} images {args.rounds} rounds, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tmp = Path(tmp)
        med = lambda v: statistics.median(v)
        auto = f"{resolve_precision('auto', args.device)}+sdpa"
        ratio, n = float('nan'), float('nan')
        if not args.skip_encoder:
            enc = encoder_part(args, tmp)
            rates = enc['rates']
            for name, s in enc['figures'].items():
                print(f"{name}: median {med(rates[name]):.3g} img/s = "
                      f"{med(a / b for a, b in zip(rates[name], rates['plain'])):.2f}x plain; "
                      f"encoder {s['encoder_share']:.0%} of the wall time, {s['tflops']:.3g} "
                      f"TFLOP/s, peak share {s['peak_share']}")
            print(f"plain: median {med(rates['plain']):.3g} img/s")
            ratio = med(a / b for a, b in zip(rates['bf16+sdpa'], rates['fp32+sdpa']))
            n = med(rates[auto])
        feed = feed_part(args, tmp)
        f = med(a / b for a, b in zip(feed['rates']['feed'], feed['rates']['write']))
        print(f"median MB/s: write {med(feed['rates']['write']):,.0f}, "
              f"feed {med(feed['rates']['feed']):,.0f} "
              f"({med(feed['rates']['feed']) * 1e6 / feed['entry_bytes']:.1f} img/s)")
        # the CPU's limit: the feed cannot run faster than the cores divided by its CPU per image
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        feed_cpu, write_cpu = med(feed['cpu']['feed']), med(feed['cpu']['write'])
        write_img_s = med(feed['rates']['write']) * 1e6 / feed['entry_bytes']
        print(f"CPU per image: feed {feed_cpu * 1e3:.1f} ms (decode, normalise, checksum, write), "
              f"the write alone {write_cpu * 1e3:.1f} ms; on {cores} cores the feed can reach at "
              f"most {cores / feed_cpu:.0f} img/s = {cores / feed_cpu / write_img_s:.2f}x the "
              f"median write ({write_img_s:.0f} img/s)")
        print(f"feed/write = {f:.2f}, bf16/fp32 = {ratio:.2f}, img/s = {n:.3g} ({auto}, {device})")


if __name__ == '__main__':
    main()
