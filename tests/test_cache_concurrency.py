"Four processes writing and reading the same cache keys at once never read a bad entry."
import multiprocessing as mp
import time

import torch

from boxrefine.cache import FeatureCache

KEYS = [f"{i:02x}" * 16 for i in range(6)]


def _hammer(cache_dir, worker, seconds, queue):
    "Write entries whose every value is this worker's id; read entries and check each is all one writer's."
    cache = FeatureCache(cache_dir, 'concurrency-fp16', 'train')
    bad, reads, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key in KEYS:
            cache.put(key, {'a': torch.full((64, 64, 32), float(worker)), 'b': torch.full((256, 16), float(worker))})
            got = cache.get(key, dtype=torch.float32)
            if got is None: continue
            reads += 1
            first = got['a'].flatten()[0]
            if not ((got['a'] == first).all() and (got['b'] == first).all()): bad.append(key)
    queue.put((worker, reads, bad, cache.stats.corrupt))


def test_four_processes_same_keys(tmp_path):
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, 4.0, queue)) for w in range(4)]
    for p in procs: p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs: p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(r[1] for r in results) > 100, results          # they really did read concurrently
    assert [r[2] for r in results] == [[]] * 4                 # no mixed or garbled entry was ever returned
    assert [r[3] for r in results] == [0] * 4                  # and none was ever seen as corrupt
    assert not list(tmp_path.rglob('*.tmp'))                   # no temporary file left behind
