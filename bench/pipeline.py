"""Training-path benchmark: the feature loader and a training epoch against the disk's parallel read.

Run: python bench/pipeline.py [--entries 200] [--device cpu|cuda] [--rounds 3]
Writes N cache entries in the real entry format with `vit_h` shapes (image embedding 256x64x64 and
early ViT feature 64x64x1280 in float16, thumbnail, sizes: about 12 MiB each), then, with the page
cache dropped before each phase for the entry files alone (posix_fadvise DONTNEED on each: dropping
the whole page cache would also evict the CUDA and torch libraries and time their reloading), alternates:
- raw: the entry files read whole by 8 threads into reused buffers (the disk's limit for these bytes);
- loader: one epoch of the training loader alone (`FeatureBatches` in DataLoader workers);
- old: what the training step did before (`FeatureCache.get` of each entry in the training process,
  float16 to float32 there), the path a user of the previous release runs;
and, once per round, three epochs of `fit` with the refiner (`vit_h`-sized `BoxRefiner`) on `--device`,
the entries evicted again after each epoch (so every epoch reads the disk, as at 90k images).
Ratios are medians over the rounds. The last line:
`loader/raw = R, train/raw = T, MiB/image = M (float16) / M8 (compact)`.
With --profile (py-spy on PATH: `pip install py-spy`), py-spy samples the loader's worker processes
(all their threads) through the timed rounds and the run ends with where their time went.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import statistics
import tempfile
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from boxrefine.cache import FeatureCache, content_keys, entry_layout
from boxrefine.data import BoxRefinementDataset, FeatureBatches, release_batch
from boxrefine.dist import DistContext
from boxrefine.features import CHANNEL_AXES, FEATURE_NAMES
from boxrefine.model import BoxRefiner
from boxrefine.train import RefinerTask, default_workers, fit, make_loader

VIT_H_INTERM = 1280


def make_dataset(folder: Path, n: int) -> tuple[Path, Path]:
    "n distinct flat 1024x768 PNGs (a few KB each) with a COCO file, two boxes an image."
    images = folder / 'images'
    images.mkdir(parents=True)
    coco = {'images': [], 'annotations': [], 'categories': [{'id': 1, 'name': 'thing'}]}
    for i in range(n):
        Image.new('RGB', (1024, 768), (i % 256, i // 256, 7)).save(images / f'{i:05d}.png')
        coco['images'].append({'id': i + 1, 'file_name': f'{i:05d}.png', 'width': 1024, 'height': 768})
        for j, box in enumerate(([100, 120, 300, 200], [500, 300, 200, 250])):
            coco['annotations'].append({'id': 2 * i + j + 1, 'image_id': i + 1, 'category_id': 1,
                                        'bbox': box, 'area': box[2] * box[3], 'iscrowd': 0})
    (folder / 'coco.json').write_text(json.dumps(coco))
    return folder / 'coco.json', images


def vit_h_entry(i: int, base: dict) -> dict:
    "Features shaped like vit_h's (distinct per entry, so checksums differ)."
    return {**base, 'original_size': torch.tensor([768, 1024 + i]), 'input_size': torch.tensor([768, 1024])}


def drop_page_cache(files: list[Path]) -> str:
    "Evict the entries, and only them, from the page cache (not the libraries the phases run)."
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return 'posix_fadvise(DONTNEED) on each entry file'


def raw_read(files: list[Path], threads: int = 8) -> float:
    "Seconds to read every file whole, `threads` at a time, into one reused buffer per thread."
    size = max(f.stat().st_size for f in files)
    local = threading.local()
    def read(f: Path):
        if not hasattr(local, 'buf'): local.buf = memoryview(bytearray(size))
        with open(f, 'rb', buffering=0) as fh:
            got = 0
            while (n := fh.readinto(local.buf[got:])): got += n
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool: list(pool.map(read, files))
    return time.perf_counter() - start


def loader_epoch(loader) -> float:
    "Seconds for one epoch of the loader, each batch handed back as the trainer does once it is copied."
    start = time.perf_counter()
    for batch in loader: release_batch(batch)
    return time.perf_counter() - start


def old_path(cache: FeatureCache, keys: list[str], batch_size: int) -> float:
    "What `RefinerTask.features` did before: `get` each entry in this process, float32 here."
    start = time.perf_counter()
    for i in range(0, len(keys), batch_size):
        feats = [cache.get(k, dtype=torch.float32) for k in keys[i:i + batch_size]]
        {k: torch.stack([f[k] for f in feats]) for k in feats[0]}
    return time.perf_counter() - start


def profile_workers(out: Path) -> list:
    "py-spy recording every DataLoader worker of this process (all threads) into `out`/w<pid>.txt."
    spy = shutil.which('py-spy')
    if spy is None: raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, 'record', '--pid', str(w.pid), '--rate', '100', '--format', 'raw',
                              '--output', str(out / f'w{w.pid}.txt'), '--nonblocking'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for w in multiprocessing.active_children()]


def profile_summary(spies: list, out: Path, top: int = 8) -> list[str]:
    "Stop the recordings; the innermost frames where the workers' threads spent most samples."
    for p in spies: p.send_signal(signal.SIGINT)
    for p in spies: p.wait(timeout=60)
    leaf, threads = Counter(), Counter()
    for f in out.glob('w*.txt'):
        for line in f.read_text().splitlines():
            stack, n = line.rsplit(' ', 1)
            frames = stack.split(';')
            thread = 'reader threads' if 'Thread._bootstrap' in stack else 'worker main thread'
            threads[thread] += int(n)
            leaf[f"{frames[-1]} [{thread}]"] += int(n)
    total = sum(threads.values()) or 1
    return (["worker samples: " + ", ".join(f"{k} {v / total:.0%}" for k, v in threads.items())]
            + [f"{n / total:6.1%}  {frame}" for frame, n in leaf.most_common(top)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--entries', type=int, default=200)
    ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--workers', type=int, default=None, help='loader workers (default: from the CPUs)')
    ap.add_argument('--dir', help='where to write the entries (default: a temporary folder)')
    ap.add_argument('--profile', action='store_true',
                    help="sample the loader's worker processes with py-spy; print where time went")
    args = ap.parse_args()
    workers = default_workers() if args.workers is None else args.workers
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {workers} loader workers, "
          f"{args.entries} vit_h-shaped entries, batch {args.batch_size}, device {args.device}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tmp = Path(tmp)
        ann, images = make_dataset(tmp / 'data', args.entries)
        ds = BoxRefinementDataset(ann, images, train=True, verbose=False)
        keys = content_keys([r['file'] for r in ds.records], tmp / 'keys.json')
        base = {'image_embedding': torch.randn(256, 64, 64), 'interm_embedding': torch.randn(64, 64, VIT_H_INTERM),
                'thumbnail': torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)}
        cache = FeatureCache(tmp / 'cache', 'vit_h-bench-float16', 'train', channel_axes=CHANNEL_AXES)
        compact = FeatureCache(tmp / 'cache', 'vit_h-bench-int8', 'train', torch.int8, channel_axes=CHANNEL_AXES)
        t0 = time.perf_counter()
        for i, k in enumerate(keys): cache.put(k, vit_h_entry(i, base))
        print(f"wrote {len(keys)} entries in {time.perf_counter() - t0:.1f} s")
        files = [cache.path_for(k) for k in keys]
        mib = statistics.mean(f.stat().st_size for f in files) / 2**20
        mib8 = len(compact.encode(keys[0], vit_h_entry(0, base))) / 2**20
        total = sum(f.stat().st_size for f in files)
        layout = entry_layout(files[0])
        ctx = DistContext(device=torch.device(args.device))
        batches = FeatureBatches(ds, cache, keys, layout)
        loader = make_loader(batches, ctx, batch_size=args.batch_size, num_workers=workers, batched=True)
        model = BoxRefiner(interm_dim=VIT_H_INTERM).to(args.device)
        task = RefinerTask(model, None, {'train': cache}, device=args.device, names=FEATURE_NAMES)
        task.validate = None                     # the training epoch alone
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        how = drop_page_cache(files)
        print(f"page cache dropped before each phase with {how}")
        loader_epoch(loader)                     # start the persistent workers once
        spies = profile_workers(tmp / 'profile') if args.profile else []
        rates = {'raw': [], 'loader': [], 'old': [], 'train': []}
        data_fraction = []
        for r in range(args.rounds):
            for phase in ('raw', 'loader', 'old', 'train'):
                drop_page_cache(files)
                if phase == 'raw': s = raw_read(files)
                elif phase == 'loader': s = loader_epoch(loader)
                elif phase == 'old': s = old_path(cache, keys, args.batch_size)
                else:            # steady state: 3 epochs, each reading from the disk again
                    start = time.perf_counter()
                    rows = fit(task, loader, optimizer, epochs=3, out_dir=tmp / f'run{r}', device=args.device,
                               precision='auto', progress=False, on_epoch=lambda row: drop_page_cache(files))
                    s = (time.perf_counter() - start) / 3
                    data_fraction.append(statistics.mean(r['data_fraction'] for r in rows))
                rates[phase].append(total / s / 1e6)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} MB/s" for k, v in rates.items())
                  + f", train waited for data {data_fraction[-1]:.0%}")
        ratio = lambda k: statistics.median(a / b for a, b in zip(rates[k], rates['raw']))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"median MB/s: raw {med['raw']:,.0f}, loader {med['loader']:,.0f}, old path {med['old']:,.0f}, "
              f"train epoch {med['train']:,.0f} ({args.device}; waited for data "
              f"{statistics.median(data_fraction):.0%})")
        print(f"old/raw = {ratio('old'):.2f}, loader/old = "
              f"{statistics.median(a / b for a, b in zip(rates['loader'], rates['old'])):.2f}")
        if spies: print('\n'.join(profile_summary(spies, tmp / 'profile')))
        print(f"loader/raw = {ratio('loader'):.2f}, train/raw = {ratio('train'):.2f}, "
              f"MiB/image = {mib:.2f} (float16) / {mib8:.2f} (compact)")


if __name__ == '__main__':
    main()
