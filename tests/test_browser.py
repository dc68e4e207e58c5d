"""The viz notebook in a real browser: JupyterLab on loopback with a token, headless Chromium driven by Playwright.

It runs every cell of a copy of `nbs/10_viz.ipynb`, checks that the box viewer and the loss curve render as widgets
(images appear), moves the viewer's slider and checks that the image changes, and saves screenshots.
.ci/run installs Debian's chromium; elsewhere the test skips when it is absent (CI=true makes that a failure).
"""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_FLAGS = ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync']


def _need_browser():
    missing = [what for what, ok in (('/usr/bin/chromium', CHROMIUM.exists()),
                                     ('playwright', shutil.which('playwright') is not None)) if not ok]
    if missing:
        if os.environ.get('CI'): pytest.fail(f"CI must install {missing} (see .ci/run)")
        pytest.skip(f"browser test needs {missing}: install Chromium with `sudo apt-get install chromium` "
                    "(Debian/Ubuntu) and Playwright with `pip install -e '.[dev]'`; under CI=true this fails")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def lab(root, fixtures, tmp_path):
    "JupyterLab on 127.0.0.1 serving a copy of the viz notebook; yields (url, token, folder)."
    _need_browser()
    work = tmp_path / 'nbs'; work.mkdir()
    shutil.copy(root / 'nbs' / '10_viz.ipynb', work)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, 'BOXREFINE_FIXTURES': str(fixtures), 'JUPYTER_CONFIG_DIR': str(tmp_path / 'jcfg'),
           'JUPYTER_RUNTIME_DIR': str(tmp_path / 'jrun'), 'MPLBACKEND': 'Agg'}
    log = open(tmp_path / 'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}',
                             '--LabApp.expose_app_in_browser=True', '--allow-root'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2).read(); break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError('JupyterLab did not start:\n' + (tmp_path / 'lab.log').read_text()[-3000:])
                time.sleep(0.5)
        yield url, token, tmp_path
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def test_viz_notebook_renders_widgets_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    url, token, folder = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1100})
            page.goto(f'{url}/lab/tree/10_viz.ipynb?token={token}', timeout=90_000)
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=90_000)
            page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                                   " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                                   " && w.sessionContext.session.kernel.connectionStatus === 'connected'; }", timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # every cell ran: the viewer and, in the last cell, the live loss curve show their images
            page.wait_for_function("() => document.querySelectorAll('img.widget-image[src^=\"blob:\"]').length >= 2",
                                   timeout=180_000)
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                                   timeout=180_000)
            errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Error")')
            assert errors.count() == 0, errors.first.inner_text()[:2000]
            page.screenshot(path=str(folder / 'viz_notebook.png'), full_page=False)

            viewer_img = page.locator('img.widget-image').first
            viewer_img.scroll_into_view_if_needed()
            before = viewer_img.get_attribute('src')
            handle = page.locator('.widget-slider .noUi-handle').first
            handle.focus(); handle.press('ArrowRight')
            page.wait_for_function("(b) => document.querySelector('img.widget-image').getAttribute('src') !== b", arg=before,
                                   timeout=60_000)
            assert viewer_img.get_attribute('src') != before
            page.screenshot(path=str(folder / 'viz_viewer_moved.png'))
            keep = os.environ.get('BOXREFINE_SCREENSHOTS')
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                for f in ('viz_notebook.png', 'viz_viewer_moved.png'): shutil.copy(folder / f, Path(keep) / f)
        finally:
            browser.close()
