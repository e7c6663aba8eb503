"""The HTTP API of medcl annotate, through an in-process client."""

from __future__ import annotations

import gzip
import io
import threading

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="medcl[annotate] is not installed (fastapi)")
pytest.importorskip("httpx", reason="medcl[annotate] is not installed (httpx, for TestClient)")

from conftest import tiny_config
from fastapi.testclient import TestClient
from PIL import Image

from medcl.annotate.cases import CaseStore
from medcl.annotate.review import RunRoot
from medcl.annotate.server import VERSION_HEADER, create_app
from medcl.annotate.session import Session
from medcl.data.synthetic import generate_dataset

SHAPE = (32, 40, 3)
OCTET = {"content-type": "application/octet-stream"}


def nifti(pens: np.ndarray) -> bytes:
    return nib.Nifti1Image(pens, np.eye(4)).to_bytes()


@pytest.fixture
def root(tmp_path):
    root = generate_dataset(tmp_path / "ds", num_train=2, num_val=1, num_test=0, shape=SHAPE,
                            seed=2)
    (root / "train" / "labels" / "case02_DE_scribble.nii.gz").unlink()
    return root


@pytest.fixture
def client(root):
    session = Session(CaseStore(root))
    with TestClient(create_app(session), base_url="http://127.0.0.1") as client:
        yield client


def test_list_cases_with_scribble_status(client):
    cases = {c["id"]: c for c in client.get("/api/cases").json()}
    assert sorted(cases) == ["case01_DE", "case02_DE"]
    assert cases["case02_DE"]["version"] == "none" and cases["case02_DE"]["counts"] == {}
    assert cases["case01_DE"]["scribbled_slices"] and cases["case01_DE"]["worst_slice"] is None
    info = client.get("/api/info").json()
    assert [c["name"] for c in info["classes"]] == ["background", "RV", "Myo", "LV"]
    assert [c["pen"] for c in info["classes"]] == [1, 2, 3, 4] and info["ignore_value"] == 4


def test_load_slice_image_and_scribbles(client, root):
    png = client.get("/api/cases/case01_DE/slices/2.png")
    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).size == (SHAPE[0], SHAPE[1])
    assert client.get("/api/cases/case01_DE/slices/3.png").status_code == 404
    image = client.get("/api/cases/case01_DE/image/0.nii")
    assert image.content == (root / "train/images/case01_DE.nii.gz").read_bytes()
    scribbles = client.get("/api/cases/case01_DE/scribbles.nii")
    pens = np.asarray(nib.Nifti1Image.from_bytes(scribbles.content).dataobj)
    on_disk = np.asarray(nib.load(str(root / "train/labels/case01_DE_scribble.nii.gz")).dataobj)
    assert np.array_equal(pens == 0, on_disk == 4)
    assert np.array_equal(pens[on_disk == 3], on_disk[on_disk == 3] + 1)
    assert scribbles.headers[VERSION_HEADER] != "none"


def test_save_scribbles_writes_the_trainer_layout_with_the_image_geometry(client, root):
    pens = np.zeros(SHAPE, dtype=np.uint8)
    pens[3, 4, 0], pens[5, 6, 1] = 2, 1  # RV, background
    reply = client.put("/api/cases/case02_DE/scribbles.nii", content=gzip.compress(nifti(pens)),
                       headers={**OCTET, "If-Match": "none"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["counts"] == {"background": 1, "RV": 1, "Myo": 0, "LV": 0}
    assert reply.json()["scribbled_slices"] == [0, 1]
    saved = nib.load(str(root / "train/labels/case02_DE_scribble.nii.gz"))
    image = nib.load(str(root / "train/images/case02_DE.nii.gz"))
    data = np.asarray(saved.dataobj)
    assert (data[3, 4, 0], data[5, 6, 1], int((data == 4).sum())) == (1, 0, data.size - 2)
    assert np.allclose(saved.affine, image.affine) and np.allclose(saved.get_sform(), image.affine)
    assert np.allclose(saved.get_qform(), image.affine)
    stale = client.put("/api/cases/case02_DE/scribbles.nii", content=nifti(pens),
                       headers={**OCTET, "If-Match": "none"})
    assert stale.status_code == 409 and "changed since it was loaded" in stale.json()["detail"]


@pytest.mark.parametrize("url", ["/api/cases/nope", "/api/cases/..%2F..%2Fetc%2Fpasswd",
                                 "/api/cases/%2Fetc%2Fpasswd/image/0.nii",
                                 "/api/cases/../../etc/passwd",
                                 "/api/cases/case01_DE/image/1.nii",
                                 "/api/cases/case01_DE/image/-1.nii"])
def test_bad_case_ids_and_traversal_are_404(client, url):
    reply = client.get(url)
    assert reply.status_code == 404, url
    assert "passwd" not in reply.text or "unknown case id" in reply.text


def test_symlinks_out_of_the_dataset_are_refused(root, tmp_path):
    outside = tmp_path / "outside.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), str(outside))
    (root / "train/images/case09_DE.nii.gz").symlink_to(outside)
    label = root / "train/labels/case01_DE_scribble.nii.gz"
    label.rename(tmp_path / "label.nii.gz")
    label.symlink_to(tmp_path / "label.nii.gz")
    session = Session(CaseStore(root))
    with TestClient(create_app(session), base_url="http://127.0.0.1") as client:
        assert client.get("/api/cases/case09_DE/image/0.nii").status_code == 404
        listed = {c["id"]: c for c in client.get("/api/cases").json()}
        assert "case09_DE" not in listed and "outside the dataset" in listed["case01_DE"]["error"]
        reply = client.get("/api/cases/case01_DE/scribbles.nii")
        assert reply.status_code == 403 and "outside the dataset" in reply.json()["detail"]
        save = client.put("/api/cases/case01_DE/scribbles.nii", headers=OCTET,
                          content=nifti(np.zeros(SHAPE, np.uint8)))
        assert save.status_code == 403
    assert (tmp_path / "label.nii.gz").is_file() and label.is_symlink()


def test_oversized_wrong_shape_and_wrong_type_uploads_are_4xx(client, root):
    target = root / "train/labels/case01_DE_scribble.nii.gz"
    before = target.read_bytes()
    big = client.put("/api/cases/case01_DE/scribbles.nii", headers=OCTET,
                     content=b"\0" * (int(np.prod(SHAPE)) * 8 + 70_000))
    assert big.status_code == 413 and "exceeds" in big.json()["detail"]
    wrong = client.put("/api/cases/case01_DE/scribbles.nii", headers=OCTET,
                       content=nifti(np.zeros((32, 40, 2), np.uint8)))
    assert wrong.status_code == 422
    assert "differs from the image's (32, 40, 3)" in wrong.json()["detail"]
    pens = np.full(SHAPE, 9, np.uint8)
    values = client.put("/api/cases/case01_DE/scribbles.nii", headers=OCTET, content=nifti(pens))
    assert values.status_code == 422 and "got 9" in values.json()["detail"]
    form = client.put("/api/cases/case01_DE/scribbles.nii", content=nifti(pens * 0),
                      headers={"content-type": "text/plain"})
    assert form.status_code == 415
    assert target.read_bytes() == before


def test_foreign_host_header_is_refused(client):
    assert client.get("/api/cases", headers={"host": "evil.example"}).status_code == 400


def test_concurrent_saves_of_one_case_never_interleave(client, root):
    bodies = {}
    for pen in (2, 3):
        pens = np.full(SHAPE, pen, np.uint8)
        pens[0, 0, 0] = 0
        bodies[pen] = nifti(pens)
    results = []

    def put(pen: int) -> None:
        for _ in range(4):
            results.append(client.put("/api/cases/case01_DE/scribbles.nii", headers=OCTET,
                                      content=bodies[pen]).status_code)

    threads = [threading.Thread(target=put, args=(pen,)) for pen in (2, 3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == [200] * 8
    final = np.asarray(nib.load(str(root / "train/labels/case01_DE_scribble.nii.gz")).dataobj)
    assert len(np.unique(final)) == 2 and final[0, 0, 0] == 4  # one whole body, not a mix
    history = sorted((root / ".medcl_annotate/history/case01_DE").iterdir())
    assert len(history) == 8  # the original file plus every replaced save
    kept = {int(np.asarray(nib.load(str(p)).dataobj)[1, 1, 1]) for p in history[1:]}
    assert kept == {1, 2}  # on-disk values of both pens: no save was lost
    # with the same expected version, exactly one of two racing saves wins
    version = client.get("/api/cases/case01_DE").json()["version"]
    codes = []
    racers = [threading.Thread(target=lambda b=b: codes.append(client.put(
        "/api/cases/case01_DE/scribbles.nii", content=b, headers={**OCTET, "If-Match": version}
    ).status_code)) for b in bodies.values()]
    [t.start() for t in racers]
    [t.join() for t in racers]
    assert sorted(codes) == [200, 409]


def test_training_without_a_run_folder_is_refused(client):
    reply = client.post("/api/train", json={"iterations": 2})
    assert reply.status_code == 422 and "--run RUN_DIR" in reply.json()["detail"]


@pytest.mark.slow
def test_train_from_the_page_then_review_ranks_slices(root, tmp_path):
    session = Session(CaseStore(root), RunRoot(tmp_path / "run"),
                      train_config=tiny_config(root).to_dict())
    with TestClient(create_app(session), base_url="http://127.0.0.1") as client:
        bad = client.post("/api/train", json={"lr": 1})
        assert bad.status_code == 422 and "cannot be set from the page" in bad.json()["detail"]
        reply = client.post("/api/train", json={"iterations": 4})
        assert reply.status_code == 202 and reply.json()["job"]["round"] == "round_001"
        assert client.post("/api/train", json={}).status_code in (202, 409)
        session.job.wait(timeout=240)
        session.join(timeout=240)
        job = client.get("/api/train").json()["job"]
        assert job["state"] == "finished", job["log_tail"]
        assert job["step"] == 4 and [s for s, _ in job["loss"]] == [1, 2, 3, 4]
        # the unscribbled case got an all-unlabelled map so that the trainer could read it
        empty = nib.load(str(root / "train/labels/case02_DE_scribble.nii.gz"))
        assert np.all(np.asarray(empty.dataobj) == 4)
        assert client.get("/api/review").json()["state"] == "done"
        cases = client.get("/api/cases").json()
        assert all(c["worst_slice"] in (0, 1, 2) for c in cases)
        ranking = client.get("/api/cases/case01_DE/uncertainty").json()
        assert sorted(ranking["ranking"]) == [0, 1, 2] and len(ranking["slices"]) == 3
        worst = ranking["ranking"][0]
        assert ranking["slices"][worst] == max(ranking["slices"])
        pred = client.get("/api/cases/case01_DE/prediction.nii")
        assert pred.status_code == 200
        assert nib.Nifti1Image.from_bytes(pred.content).shape == SHAPE


def test_multi_channel_case_serves_each_channel(tmp_path):
    root = tmp_path / "mc"
    for channel in (0, 1):
        data = np.full(SHAPE, 10.0 * (channel + 1), np.float32)
        path = root / "imagesTr" / f"c1_{channel:04d}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    (root / "dataset.json").write_text(
        '{"labels": {"background": 0, "a": 1, "ignore": 2}, '
        '"channel_names": {"0": "T1", "1": "T2"}}')
    with TestClient(create_app(Session(CaseStore(root))), base_url="http://127.0.0.1") as client:
        assert client.get("/api/info").json()["channels"] == ["T1", "T2"]
        case = client.get("/api/cases/c1").json()
        assert case["channels"] == 2 and case["files"] == ["c1_0000.nii.gz", "c1_0001.nii.gz"]
        second = client.get("/api/cases/c1/image/1.nii")
        second_image = nib.Nifti1Image.from_bytes(gzip.decompress(second.content))
        assert np.asarray(second_image.dataobj).max() == 20.0
        assert client.get("/api/cases/c1/image/2.nii").status_code == 404
        saved = client.put("/api/cases/c1/scribbles.nii", headers=OCTET,
                           content=nifti(np.ones(SHAPE, np.uint8)))
        assert saved.status_code == 200
        assert saved.json()["counts"] == {"background": int(np.prod(SHAPE)), "a": 0}
    assert (root / "labelsTr" / "c1.nii.gz").is_file()
