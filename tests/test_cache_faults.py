"""A real feature cache, damaged the ways disks, crashes and people damage it, through the CLI.

What `cache info` (headers) and `cache verify` (checksums) count, what `--repair` removes, and that
`cache precompute` extracts again exactly the entries that are not sound, cleaning up after writers
that were killed; an entry of another layout is the one that is wrong, never the others; a cache
this user may only read stops every command that would write to it in one line.
"""
import contextlib
import ctypes
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch
from PIL import Image, ImageOps

from boxrefine.cache import FeatureCache, content_key, entry_layout
from boxrefine.cachecheck import check_entry
from boxrefine.cli import main

HOUR_AGO = time.time() - 3600


def run(*args):
    "The `boxrefine` console script with `args`: the completed process."
    exe = shutil.which('boxrefine')
    assert exe, 'the boxrefine console script is not installed (pip install -e .)'
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)


def cli(*args) -> subprocess.CompletedProcess:
    "`boxrefine ARGS` in this process (torch is imported once, not per command), as `run` answers."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def precompute(images, cache_dir, run=cli) -> dict:
    "Run `boxrefine cache precompute` and return its summary (the JSON line it prints)."
    r = run('cache', 'precompute', '--images', images, '--cache-dir', cache_dir,
            '--allow-random-init', '--batch-size', '6')
    assert r.returncode == 0, r.stderr
    return json.loads(next(line for line in r.stdout.splitlines() if line.startswith('{')))


def dead_pid() -> int:
    "The PID of a process that has ended."
    p = subprocess.Popen([sys.executable, '-c', ''])
    p.wait()
    return p.pid


@pytest.fixture(scope='module')
def images(fixtures, tmp_path_factory):
    "Six images: the three of the shapes fixture and their mirror images."
    out = tmp_path_factory.mktemp('images')
    for f in sorted((fixtures / 'shapes3').glob('*.jpg')):
        shutil.copy(f, out / f.name)
        ImageOps.mirror(Image.open(f)).save(out / f"{f.stem}_mirrored.png")
    return out


@pytest.mark.slow
def test_faults_are_counted_repaired_and_extracted_again(images, tmp_path):
    cache_dir = tmp_path / 'cache'
    first = precompute(images, cache_dir, run)     # the console script, end to end
    assert (first['extracted'], first['failed'], first['orphaned_tmp_removed']) == (6, 0, 0)
    (fp_dir,) = list(cache_dir.iterdir())
    root = fp_dir / 'train'
    keys = [content_key(p) for p in sorted(images.iterdir())]
    path = {name: root / k[:2] / f"{k}.safetensors" for name, k in zip('ABCDEF', keys)}
    raw = {name: p.read_bytes() for name, p in path.items()}

    # the faults
    path['A'].write_bytes(b'')                                          # zero-length
    path['B'].write_bytes(raw['B'][:len(raw['B']) // 2])                # truncated
    path['C'].write_bytes(os.urandom(len(raw['C'])))                    # random bytes
    path['D'].write_bytes(raw['E'])                                     # another key's entry
    path['F'].write_bytes(raw['F'][:-16] + bytes(b ^ 0x55 for b in raw['F'][-16:]))  # bit rot
    stale = path['A'].with_name(f".{path['A'].name}.{dead_pid()}.0123abcd.tmp")   # killed writer
    stale.write_bytes(raw['A'][:1000])
    live = path['E'].with_name(f".{path['E'].name}.{os.getpid()}.89abcdef.tmp")   # live writer
    live.write_bytes(raw['E'][:1000])
    for f in (stale, live):
        os.utime(f, (HOUR_AGO, HOUR_AGO))
    info_file = fp_dir / 'fingerprint.json'
    info_file.write_text('{"model_type": "vit_tiny\x01", "random_init": true}')
    untouched = {n: path[n].stat().st_ino for n in 'EF'}

    # a broken fingerprint.json: an error naming the file and the fix, no traceback
    r = cli('cache', 'precompute', '--images', images, '--cache-dir', cache_dir,
            '--allow-random-init')
    assert r.returncode == 1
    assert f"cache description {info_file} is broken (Invalid control character" in r.stderr
    assert f"boxrefine cache clear {cache_dir} --fingerprint {fp_dir.name}" in r.stderr
    assert 'Traceback' not in r.stderr

    # info: the header check finds A-D, reports the broken description and goes on
    r = cli('cache', 'info', cache_dir)
    assert r.returncode == 0, r.stderr
    line = next(s for s in r.stdout.splitlines() if s.startswith(f"{fp_dir.name}/train: "))
    assert line.startswith(f"{fp_dir.name}/train: 6 entries, ")
    assert line.endswith(', 1 orphaned temporary file (0.0 MiB), 1 temporary file in use')
    assert ', 4 invalid (' in line
    assert f"error: cache description {info_file} is broken" in r.stdout
    (row,) = json.loads(cli('cache', 'info', cache_dir, '--json').stdout)
    counts = {k: row[k] for k in ('entries', 'valid', 'invalid', 'orphaned_tmp', 'active_tmp')}
    assert counts == {'entries': 6, 'valid': 2, 'invalid': 4, 'orphaned_tmp': 1, 'active_tmp': 1}
    assert row['invalid_bytes'] == sum(path[n].stat().st_size for n in 'ABCD')
    assert row['orphaned_tmp_bytes'] == 1000 and row['info_error']

    # verify: the checksums find F too; exit status 1 (from the console script) and the command
    # that repairs
    r = run('cache', 'verify', cache_dir)
    assert r.returncode == 1, r.stderr
    assert 'verified 6 entries: 1 valid, 5 invalid; 1 orphaned temporary file' in r.stdout
    assert f"to remove them: boxrefine cache verify {cache_dir} --repair" in r.stdout
    (row,) = json.loads(cli('cache', 'verify', cache_dir, '--json').stdout)
    problems = {f['path']: f['problem'] for f in row['invalid_files']}
    assert sorted(problems) == sorted(str(path[n]) for n in 'ABCDF')
    assert 'header length 0' in problems[str(path['A'])]
    assert 'holds key' in problems[str(path['D'])]
    assert problems[str(path['F'])] == "its checksum does not match its tensors' bytes"

    # the fix the error names; then precompute extracts the four unsound entries again, keeps
    # the sound ones (F's header is sound: precompute trusts headers) and cleans the killed
    # writer's file, not the live writer's
    info_file.unlink()
    second = precompute(images, cache_dir)
    assert (second['already_cached'], second['extracted'], second['orphaned_tmp_removed']) \
        == (2, 4, 1)
    assert not stale.exists() and live.exists()
    assert {n: path[n].stat().st_ino for n in 'EF'} == untouched
    assert [check_entry(path[n], full=True) for n in 'ABCDE'] == [None] * 5
    assert json.loads(info_file.read_text())['random_init'] is True

    # verify --repair removes F (and nothing sound); the next precompute extracts only F
    r = cli('cache', 'verify', cache_dir, '--repair', '--json')
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert (row['invalid'], row['removed_invalid'], row['removed_tmp']) == (1, 1, 0)
    assert not path['F'].exists()
    third = precompute(images, cache_dir)
    assert (third['already_cached'], third['extracted'], third['orphaned_tmp_removed']) == (5, 1, 0)
    r = cli('cache', 'verify', cache_dir)
    assert r.returncode == 0, r.stdout
    assert 'verified 6 entries: 6 valid, 0 invalid; 0 orphaned temporary files' in r.stdout


@pytest.fixture(scope='module')
def sound_cache(images, tmp_path_factory):
    "A cache of the six images, precomputed once (random-init vit_tiny); each test takes a copy."
    cache_dir = tmp_path_factory.mktemp('sound') / 'cache'
    assert precompute(images, cache_dir)['extracted'] == 6
    return cache_dir


def copy_of(sound_cache, tmp_path):
    "A copy of the sound cache: its folder, its encoder's folder and its split's folder."
    cache_dir = shutil.copytree(sound_cache, tmp_path / 'cache')
    (fp_dir,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return cache_dir, fp_dir, fp_dir / 'train'


def entry_paths(images, root) -> list:
    "The entry of each image, in the images' order."
    return [root / k[:2] / f"{k}.safetensors"
            for k in (content_key(p) for p in sorted(images.iterdir()))]


def odd_entry(cache: FeatureCache, key: str, scratch) -> bytes:
    "A self-consistent entry of `key` (its own key, its checksum) with its embedding reshaped."
    feats = cache.get(key)
    feats['image_embedding'] = feats['image_embedding'].reshape(64, 256, 64)   # the same bytes
    return FeatureCache(scratch, 'elsewhere').encode(key, feats)


@pytest.mark.slow
def test_an_entry_of_another_layout_is_the_one_that_is_wrong(images, sound_cache, tmp_path):
    cache_dir, fp_dir, root = copy_of(sound_cache, tmp_path)
    cache = FeatureCache(cache_dir, fp_dir.name, 'train')        # the layout: from fingerprint.json
    keys = [p.name.removesuffix('.safetensors') for p in entry_paths(images, root)]
    first, odd = cache.path_for(keys[0]), odd_entry(cache, keys[0], tmp_path)
    first.write_bytes(odd)
    assert check_entry(first, full=True) is None                     # sound, taken alone
    why = ("tensor 'image_embedding' is float16 [64, 256, 64], this cache's entries hold "
           "float16 [256, 64, 64]")

    # verify: the odd entry is the invalid one
    r = cli('cache', 'verify', cache_dir, '--json')
    assert r.returncode == 1, r.stderr
    (row,) = json.loads(r.stdout)
    assert (row['valid'], row['invalid_files']) == (5, [{'path': str(first), 'problem': why}])

    # training laid its batches out from the first entry: refused before anything is read
    assert cache.expected_layout(keys) == cache.layout
    assert cache.layout['image_embedding'] == (torch.float16, (256, 64, 64))
    with pytest.raises(ValueError, match=re.escape(f"in another layout than its entries': {why}")):
        cache.read_batch(keys, entry_layout(first))
    assert all(cache.path_for(k).is_file() for k in keys)
    with pytest.warns(RuntimeWarning, match='corrupt entry'):
        batch, missing = cache.read_batch(keys)                # the cache's own layout
    assert (missing, cache.stats.corrupt) == ([0], 1)
    assert [cache.path_for(k).is_file() for k in keys] == [False] + [True] * 5

    # precompute does not count it as cached: it extracts it again
    first.write_bytes(odd)
    again = precompute(images, cache_dir)
    assert (again['already_cached'], again['extracted']) == (5, 1)
    assert check_entry(first, full=True, layout=cache.layout) is None

    # a cache made before layouts were recorded goes by what most entries hold
    info = json.loads((fp_dir / 'fingerprint.json').read_text())
    del info['layout']
    (fp_dir / 'fingerprint.json').write_text(json.dumps(info))
    first.write_bytes(odd)
    r = cli('cache', 'verify', cache_dir, '--repair', '--json')
    (row,) = json.loads(r.stdout)
    assert row['invalid_files'] == [{'path': str(first), 'problem': why.replace(
        "this cache's entries hold", 'most entries of this split hold')
        + ' (its fingerprint.json records no layout)'}]
    assert (row['removed_invalid'], [p.is_file() for p in entry_paths(images, root)]) \
        == (1, [False] + [True] * 5)


def rewrite_header(path, **changes):
    "Give the image embedding of the entry at `path` the header values `changes`, its data kept."
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], 'little')
    header = json.loads(raw[8:8 + n])
    header['image_embedding'].update(changes)
    text = json.dumps(header).encode()
    text += b' ' * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, 'little') + text + raw[8 + n:])


@pytest.mark.slow
def test_info_reports_the_header_problems_verify_reports(images, sound_cache, tmp_path):
    cache_dir, fp_dir, root = copy_of(sound_cache, tmp_path)
    path = entry_paths(images, root)
    rewrite_header(path[0], dtype='F99')
    rewrite_header(path[1], shape=[1e9, 1e9])
    rewrite_header(path[2], shape=[10**9, 10**9])
    expected = {
        str(path[0]): "tensor 'image_embedding' has the unknown dtype 'F99' (header key 'dtype')",
        str(path[1]): "tensor 'image_embedding' has the shape [1000000000.0, 1000000000.0], not a "
                      "list of whole numbers (header key 'shape')",
        str(path[2]): "tensor 'image_embedding': its shape [1000000000, 1000000000] of F16 needs "
                      "2,000,000,000,000,000,000 bytes, its data_offsets hold 2,097,152 (header "
                      "keys 'shape', 'data_offsets')"}
    problems = lambda row: {f['path']: f['problem'] for f in row['invalid_files']}
    (info,) = json.loads(cli('cache', 'info', cache_dir, '--json').stdout)
    (verified,) = json.loads(cli('cache', 'verify', cache_dir, '--json').stdout)
    assert (info['valid'], info['invalid']) == (3, 3)
    assert problems(info) == expected == problems(verified)
    out = cli('cache', 'info', cache_dir).stdout
    for p, why in expected.items():
        assert f"  invalid {p}: {why}" in out.splitlines()


@pytest.mark.slow
def test_the_disk_space_refusal_names_only_what_precompute_accepts(images, sound_cache, tmp_path):
    cache_dir, _, root = copy_of(sound_cache, tmp_path)
    entry_paths(images, root)[0].unlink()                          # one image to extract
    with mock.patch('shutil.disk_usage', return_value=mock.Mock(free=1000)):
        r = cli('cache', 'precompute', '--images', images, '--cache-dir', cache_dir,
                '--allow-random-init')
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith('boxrefine cache: error: the feature cache needs about '), line
    with contextlib.redirect_stdout(io.StringIO()) as help_text, pytest.raises(SystemExit):
        main(['cache', 'precompute', '--help'])
    accepted = help_text.getvalue()
    named = set(re.findall(r'--[a-z][a-z-]*', line))
    assert named and named <= set(re.findall(r'--[a-z][a-z-]*', accepted)), named
    for dtype in ('int8', 'float16', 'bfloat16', 'float32'):
        assert dtype not in line or dtype in accepted, dtype
    assert re.match(r"boxrefine cache: error: the feature cache needs about [0-9.]+ GiB for 1 "
                    rf"image but only 0\.00 GiB is free at {re.escape(str(root))}: ", line), line


CHILD = r"""
import contextlib, io, json, sys, traceback
from boxrefine.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException:
            rc = None
            traceback.print_exc()
    results.append([rc, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def obey_permissions():
    "preexec_fn: the child obeys file permissions even as root (no DAC_OVERRIDE, FOWNER, ...)."
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP: gone from what exec grants
            raise OSError(ctypes.get_errno(), 'cannot drop a capability')


def tree(folder) -> dict:
    "Every file under `folder` with its size."
    return {str(p): p.stat().st_size for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_a_read_only_cache_stops_each_writing_command_in_one_line(images, sound_cache, tmp_path):
    cache_dir, fp_dir, root = copy_of(sound_cache, tmp_path)
    path = entry_paths(images, root)
    path[0].unlink()                                               # missing: precompute has work
    path[1].write_bytes(path[1].read_bytes()[:100])                # broken: verify has work
    before = tree(cache_dir)
    commands = [['cache', 'precompute', '--images', str(images), '--cache-dir', str(cache_dir),
                 '--allow-random-init'],
                ['cache', 'verify', str(cache_dir), '--repair'],
                ['cache', 'clear', str(cache_dir)]]
    folders = [root, root, fp_dir]
    for p in [cache_dir, *cache_dir.rglob('*')]:
        p.chmod(p.stat().st_mode & ~0o222)                         # read-only for everyone
    try:
        as_root = os.geteuid() == 0
        try:
            r = subprocess.run([sys.executable, '-W', 'ignore::UserWarning', '-c', CHILD,
                                json.dumps(commands)],
                               capture_output=True, text=True, timeout=600,
                               preexec_fn=obey_permissions if as_root else None)
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot run a child that obeys file permissions here: {e}")
        assert r.returncode == 0, r.stderr
        results = json.loads(r.stdout.splitlines()[-1])
    finally:
        for p in [cache_dir, *cache_dir.rglob('*')]:
            p.chmod(p.stat().st_mode | 0o200)
    for (rc, out, err), argv, folder in zip(results, commands, folders):
        assert (rc, 'Traceback' in err) == (1, False), (argv, err)
        assert len(err.splitlines()) == 1, (argv, err)
        line = err.strip()
        start = f"boxrefine cache: error: cache folder {folder} is not writable: "
        assert line.startswith(start), (argv, line)
    assert tree(cache_dir) == before
