"""A real feature cache, damaged the ways disks, crashes and people damage it, through the CLI.

What `cache info` (headers) and `cache verify` (checksums) count, what `--repair` removes, and that
`cache precompute` extracts again exactly the entries that are not sound, cleaning up after writers
that were killed.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image, ImageOps

from boxrefine.cache import check_entry, content_key
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
    assert problems[str(path['F'])] == 'CorruptEntry: checksum mismatch'

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
