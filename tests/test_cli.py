"The `boxrefine` console script as users run it: installed entry point, version, help, errors."
import configparser
import shutil
import subprocess
import sys


def run(*args, check=True):
    exe = shutil.which('boxrefine')
    assert exe, 'the boxrefine console script is not installed (pip install -e .)'
    return subprocess.run([exe, *args], capture_output=True, text=True, check=check, timeout=120)


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
