"""The annotate page end to end in headless Chromium (Debian's ``chromium``, driven by
playwright-core from ``web/node_modules``): draw, undo, save, reload, train, see the prediction."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, tiny_config

pytest.importorskip("fastapi", reason="medcl[annotate] is not installed (fastapi)")
pytest.importorskip("uvicorn", reason="medcl[annotate] is not installed (uvicorn)")

import uvicorn

from medcl.annotate.cases import CaseStore
from medcl.annotate.review import RunRoot
from medcl.annotate.server import create_app
from medcl.annotate.session import Session
from medcl.data.synthetic import generate_dataset

CHROMIUM = Path("/usr/bin/chromium")
WEB = REPO / "web"
SCRIPT = WEB / "e2e" / "annotate.e2e.mjs"
SHAPE = (48, 56, 4)
SERVER_START_S = 20
E2E_TIMEOUT_S = 420


def _skip_without_browser() -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    if shutil.which("node") is None:
        pytest.skip("node not found (Node.js drives the browser)")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.skip("web/node_modules/playwright-core missing (make web)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    _skip_without_browser()
    root = generate_dataset(tmp_path / "ds", num_train=2, num_val=1, num_test=0, shape=SHAPE,
                            seed=5)
    (root / "train" / "labels" / "case02_DE_scribble.nii.gz").unlink()
    session = Session(CaseStore(root), RunRoot(tmp_path / "run"),
                      train_config=tiny_config(root).to_dict())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield root, f"http://127.0.0.1:{port}/", session
    server.should_exit = True
    thread.join(SERVER_START_S)
    session.close()


@pytest.mark.slow
def test_draw_undo_save_reload_train_in_headless_chromium(server, tmp_path):
    root, url, _session = server
    out = tmp_path / "e2e"
    out.mkdir()
    run = subprocess.run(["node", str(SCRIPT), url, "case02_DE", str(out), "--train"], cwd=WEB,
                         capture_output=True, text=True, timeout=E2E_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["errors"] == []
    saved = nib.load(str(root / "train/labels/case02_DE_scribble.nii.gz"))
    image = nib.load(str(root / "train/images/case02_DE.nii.gz"))
    data = np.asarray(saved.dataobj)
    assert np.allclose(saved.affine, image.affine) and np.allclose(saved.get_qform(), image.affine)
    assert saved.shape == SHAPE
    # the voxel under the end of each stroke holds its class; the undone Myo stroke is gone
    assert data[tuple(result["rv"])] == 1 and data[tuple(result["lv"])] == 3
    assert not (data == 2).any() and data[tuple(result["myo"])] == 4
    counts = {v: int((data == v).sum()) for v in (1, 3)}
    assert counts[1] > 0 and counts[3] > 0
    assert result["undoRestored"] and result["withMyo"] > result["afterUndo"]
    assert counts[1] + counts[3] == result["afterUndo"] == result["afterReload"]
    scribbled = np.flatnonzero((data != 4).any(axis=(0, 1)))
    assert scribbled.tolist() == [result["rv"][2]]  # one slice, the one drawn on
    assert result["model"] == "round_001" and result["predictionVoxels"] == int(np.prod(SHAPE))
    assert sorted(result["ranking"]) == list(range(SHAPE[2]))
    assert "finished" in result["trainState"]
    assert result["curvePoints"] == 4  # the learning curve: one point per logged step
