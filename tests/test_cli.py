"The `boxrefine` console script as users run it: installed entry point, version, help, errors."
import configparser
import shutil
import subprocess
import sys

import pytest


def run(*args, check=True, cwd=None):
    exe = shutil.which('boxrefine')
    assert exe, 'the boxrefine console script is not installed (pip install -e .)'
    return subprocess.run([exe, *args], capture_output=True, text=True, check=check, timeout=120,
                          cwd=cwd)


def test_version_matches_settings(root):
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(root / 'settings.ini')
    assert run('--version').stdout.strip() == f"boxrefine {cfg['DEFAULT']['version']}"


def test_help_lists_usage():
    out = run('--help').stdout
    assert out.startswith('usage: boxrefine') and '--version' in out


def test_no_arguments_prints_help():
    assert 'usage: boxrefine' in run().stdout


def test_unknown_subcommand_is_an_error():
    r = run('no-such-command', check=False)
    assert r.returncode == 2 and 'invalid choice' in r.stderr


def test_module_entry_point():
    r = subprocess.run([sys.executable, '-c', 'import boxrefine.boxes, boxrefine.losses, boxrefine.cli'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


BAD_ARGUMENTS = [
    (['boxgen'], 'boxgen needs --cirr-root, --method, --split or --all-splits'),
    (['boxgen', 'merge', 'out.json'], 'usage: boxrefine boxgen merge OUTPUT SHARD'),
    (['boxgen', '--cirr-root', '.', '--method', 'saliency', '--split', 'val', '--shard', '2/2'],
     "argument --shard: shard '2/2': need 0 <= i < n"),
    (['train', '--config', 'missing.yaml'], 'config file not found: missing.yaml'),
    (['detr', '--train-img', '.', '--train-ann', 'none.json'],
     'COCO annotation file not found: none.json'),
    (['detr', '--train-img', '.', '--train-ann', 'x.json', '--batch-size', '0'],
     'argument --batch-size: must be at least 1, got 0'),
    (['cocoeval', 'gt.json', 'dets.json'], 'COCO annotation file not found: gt.json'),
    (['boxstats', 'none.json'], 'boxes file not found: none.json'),
    (['cache', 'info', 'nowhere'], 'cache folder not found: nowhere'),
    (['cache', 'verify', 'nowhere'], 'cache folder not found: nowhere'),
]


@pytest.mark.parametrize('args, message', BAD_ARGUMENTS,
                         ids=[' '.join(a[:2]) for a, _ in BAD_ARGUMENTS])
def test_argument_errors_answer_before_torch(args, message, tmp_path):
    r = run(*args, check=False, cwd=tmp_path)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    code = ("import sys\n"
            "from boxrefine.cli import main\n"
            "try:\n"
            f"    rc = main({args!r})\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('torch' in sys.modules)\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    assert r.stdout.strip() == 'False', 'torch was imported before the arguments were checked'
