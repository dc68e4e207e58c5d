"""Run notebooks as CI runs them (the cells flagged in settings.ini's `tst_flags` skipped) and save
their outputs in place, so that the committed notebooks show their tables and pictures.

Run: python .ci/notebook_outputs.py [nbs/05_model.ipynb ...]   (default: every notebook)
then `nbdev_clean`. A flagged (slow, cuda) cell keeps the output it has: those are kept from a
real run, and the cell's prose says where they came from. Progress bars are switched off
(TQDM_DISABLE) so that the outputs are the figures, not the bars.
"""
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('TQDM_DISABLE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from nbdev.config import get_config


def run_with_outputs(path: Path, flags: set[str]) -> float:
    "Execute `path` (cells flagged with `flags` skipped, their outputs kept); save it; seconds."
    nb = read_nb(path)
    def directives(cell) -> dict:
        "The cell's `#| flag` lines, as nbdev reads them: {'slow': [], 'eval:': ['false']}."
        lines = [l[2:].split() for l in cell.source.splitlines() if l.startswith('#|')]
        return {l[0]: l[1:] for l in lines if l}
    def no_eval(cell):
        if cell.cell_type != 'code': return True
        if directives(cell).get('eval:', [''])[0].lower() == 'false': return True
        return bool(flags & directives(cell).keys())
    for cell in nb.cells:           # a flagged cell keeps the output of its last real run
        if cell.cell_type == 'code' and not flags & directives(cell).keys(): cell.outputs = []
    t0 = time.time()
    shell = CaptureShell(path)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=no_eval)
    finally: os.chdir(cwd)
    write_nb(nb, path)
    return time.time() - t0


def main(paths: list[str]):
    cfg = get_config()
    flags = set(str(cfg.get('tst_flags', '')).split())
    nbs = [Path(p) for p in paths] or sorted(Path(cfg.nbs_path).glob('*.ipynb'))
    for p in nbs:
        print(f"{p}: {run_with_outputs(p.resolve(), flags):.0f} s", flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
