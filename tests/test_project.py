"The project's own files: what CI runs is what the README tells users to run; packaging reads settings.ini."
import configparser
import re
import subprocess


def readme_test_command(root):
    text = (root / 'README.md').read_text()
    m = re.search(r'<!-- test-command -->\s*```\w*\n(.+?)\n```', text)
    assert m, 'README.md has no test command after <!-- test-command -->'
    return m.group(1).strip()


def test_ci_runs_the_readme_test_command(root):
    cmd = readme_test_command(root)
    out = subprocess.run(['awk', '/<!-- test-command -->/{found=1; next} found && /^```/{if (inblock) exit; inblock=1; next} inblock{print; exit}',
                          str(root / 'README.md')], capture_output=True, text=True, check=True).stdout.strip()
    assert out == cmd
    assert 'nbdev_test' in cmd and 'pytest tests' in cmd
    ci = (root / '.ci' / 'run').read_text()
    assert 'set -euo pipefail' in ci and 'pip install -e ".[dev]"' in ci


def test_settings_hold_requirements(root):
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(root / 'settings.ini')
    d = cfg['DEFAULT']
    reqs = d['requirements']
    for pkg in ('torch', 'torchvision', 'segment-anything-hq', 'transformers', 'pycocotools', 'faster-coco-eval',
                'ultralytics', 'safetensors', 'pyyaml', 'tqdm'):
        assert pkg in reqs, pkg
    assert 'nbdev==2.4.14' in d['dev_requirements']
    assert d['update_pyproject'] == 'False'
    assert d['console_scripts'] == 'boxrefine=boxrefine.cli:main'
