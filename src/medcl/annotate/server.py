"""The HTTP face of ``medcl annotate``: a JSON/NIfTI API over :class:`Session` and the page.

Case ids in URLs are looked up (:meth:`CaseStore.get`), never joined into paths. Errors map to
4xx: unknown case 404, a file resolving outside the dataset 403, a stale save 409, an upload
larger than the case's image can need 413, a wrong content type 415, a shape or value mismatch
422. Only loopback host names are accepted (no DNS rebinding) unless the server is bound to
another address on purpose.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.middleware.trustedhost import TrustedHostMiddleware

from medcl.annotate.cases import CaseStore, OutsideDataset, StaleVersion, UnknownCase
from medcl.annotate.drawing import (
    ShapeMismatch,
    UploadTooLarge,
    class_colors,
    decode_drawing,
    max_upload_bytes,
)
from medcl.annotate.review import RunRoot, load_review, prediction_indices
from medcl.annotate.session import Busy, Session
from medcl.errors import ConfigError, DataError, MedclError
from medcl.training.config import TrainConfig

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
NIFTI_MEDIA = "application/octet-stream"
VERSION_HEADER = "X-Scribble-Version"
#: percentiles of the display window of slice previews
PREVIEW_WINDOW = (0.5, 99.5)
#: smallest window width of a preview (a constant image stays black, not NaN)
MIN_WINDOW = 1e-6
_STATUS = [(UnknownCase, 404), (OutsideDataset, 403), (StaleVersion, 409), (Busy, 409),
           (UploadTooLarge, 413), (ShapeMismatch, 422), (DataError, 422), (ConfigError, 422),
           (MedclError, 400)]


def _error_response(request: Request, exc: MedclError) -> JSONResponse:
    status = next(code for kind, code in _STATUS if isinstance(exc, kind))
    return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=status)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header) -> bytes:
    header = header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, affine, header)
    img.header.set_slope_inter(1, 0)
    return img.to_bytes()


def slice_png(volume: np.ndarray, z: int) -> bytes:
    """A PNG of slice ``z`` of ``volume (X, Y, Z)``, windowed to the volume's percentiles."""
    low, high = np.percentile(volume, PREVIEW_WINDOW)
    plane = np.clip((volume[:, :, z] - low) / max(high - low, MIN_WINDOW), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(plane * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"upload of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"upload exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _page_info(session: Session) -> dict:
    store = session.store
    description = json.loads(store.description.read_text())
    spec = store.spec
    colors = class_colors(spec, description, source=str(store.description))
    classes = [{"index": k, "pen": k + 1, "name": name, "value": int(value), "color": color}
               for k, (name, value, color) in enumerate(zip(spec.class_names, spec.label_values,
                                                            colors))]
    model = session.current_model()
    return {"dataset": str(store.root), "layout": store.layout, "trainable": store.trainable,
            "classes": classes, "ignore_value": spec.ignore_value, "unlabelled_pen": 0,
            "channels": list(spec.channel_names), "has_run": session.runs is not None,
            "model": session.runs.name(model) if model else None}


def create_app(session: Session, *, host: str = DEFAULT_HOST) -> FastAPI:
    """The FastAPI app of one session (page at ``/``, API under ``/api``)."""
    app = FastAPI(title="medcl annotate", docs_url=None, redoc_url=None, openapi_url=None)
    allowed = ["*"] if host not in ("127.0.0.1", "localhost", "::1") else [
        h.strip("[]") for h in LOOPBACK_HOSTS]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed)
    app.add_exception_handler(MedclError, _error_response)
    store = session.store

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/info")
    def info() -> dict:
        return _page_info(session)

    @app.get("/api/cases")
    def cases() -> list[dict]:
        return session.case_list()

    @app.get("/api/cases/{case_id}")
    def case(case_id: str) -> dict:
        image = store.image(case_id)
        return {"id": store.get(case_id).case_id, "shape": list(image.shape),
                "spacing": list(image.spacing), "channels": len(store.get(case_id).image_paths),
                "files": [p.name for p in store.get(case_id).image_paths],
                **store.status(case_id), **session.case_uncertainty(case_id)}

    @app.get("/api/cases/{case_id}/image/{channel:int}.nii")
    def image_file(case_id: str, channel: int) -> FileResponse:
        path = store.image_file(case_id, channel)
        return FileResponse(path, media_type=NIFTI_MEDIA, filename=path.name)

    @app.get("/api/cases/{case_id}/slices/{z}.png")
    def slice_preview(case_id: str, z: int, channel: int = 0) -> Response:
        path = store.image_file(case_id, channel)
        volume = nib.load(str(path)).get_fdata(dtype=np.float32)
        if not 0 <= z < volume.shape[2]:
            raise UnknownCase(f"case {case_id!r} has slices 0..{volume.shape[2] - 1}, not {z}")
        return Response(slice_png(volume, z), media_type="image/png")

    @app.get("/api/cases/{case_id}/scribbles.nii")
    def get_scribbles(case_id: str) -> Response:
        with store.lock(case_id):
            version = store.version(case_id)
            image = store.image(case_id)
            pens = store.pens(case_id, image)
        return Response(_nifti_bytes(pens, image.affine, image.header), media_type=NIFTI_MEDIA,
                        headers={VERSION_HEADER: version, "Cache-Control": "no-store"})

    @app.put("/api/cases/{case_id}/scribbles.nii")
    async def put_scribbles(case_id: str, request: Request) -> dict:
        if request.headers.get("content-type", "").split(";")[0] != NIFTI_MEDIA:
            return JSONResponse({"detail": f"send the drawing as {NIFTI_MEDIA}"},
                                status_code=415)
        image = await run_in_threadpool(store.image, case_id)
        body = await _read_body(request, max_upload_bytes(image.shape))
        source = f"upload for case {store.get(case_id).case_id!r}"
        pens = await run_in_threadpool(decode_drawing, body, image.shape, source=source)
        expected = request.headers.get("if-match")
        version = await run_in_threadpool(store.save, case_id, pens, expected_version=expected,
                                          image=image)
        return {"version": version, **store.status(case_id)}

    @app.get("/api/cases/{case_id}/prediction.nii")
    def prediction(case_id: str) -> Response:
        model = session.current_model()
        indices = prediction_indices(model, store, case_id) if model else None
        if indices is None:
            return JSONResponse({"detail": "no prediction for this case yet"}, status_code=404)
        image = store.image(case_id)
        return Response(_nifti_bytes(indices, image.affine, image.header),
                        media_type=NIFTI_MEDIA, headers={"Cache-Control": "no-store"})

    @app.get("/api/cases/{case_id}/uncertainty")
    def uncertainty(case_id: str) -> dict:
        return session.case_uncertainty(case_id)

    @app.get("/api/review")
    def review() -> dict:
        session.ensure_review()
        model = session.current_model()
        return {**session.review, "current": session.runs.name(model) if model else None,
                "reviewed": bool(model and load_review(model))}

    @app.get("/api/train")
    def train_status() -> dict:
        return {"job": session.training_status()}

    @app.post("/api/train", status_code=202)
    async def train_start(request: Request) -> dict:
        try:
            options = await request.json()
        except json.JSONDecodeError:
            raise ConfigError("training options must be a JSON object") from None
        if not isinstance(options, dict):
            raise ConfigError("training options must be a JSON object")
        return {"job": await run_in_threadpool(session.start_training, options)}

    @app.delete("/api/train")
    def train_cancel() -> dict:
        session.cancel_training()
        return {"job": session.training_status()}

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def open_session(dataset: str | os.PathLike, *, run: str | os.PathLike | None = None,
                 labels: str | os.PathLike | None = None,
                 train_config: str | os.PathLike | None = None) -> Session:
    """The session of ``medcl annotate DATASET [--run RUN] [--labels F] [--train-config F]``."""
    config = TrainConfig.from_file(train_config).to_dict() if train_config else None
    return Session(CaseStore(dataset, labels), RunRoot(run) if run else None,
                   train_config=config)


def listening_socket(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """The server's socket, bound before anything else starts (port 0: a free one, see
    ``getsockname()``), so that a taken port is one line, not a server that fails to start.

    Raises:
        ConfigError: the port is in use, or ``host:port`` cannot be bound.
    """
    address = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is free
    try:
        sock.bind((address, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
        sock.close()
        reason = ("the port is in use (another medcl annotate?); choose another with --port"
                  if getattr(exc, "errno", None) == errno.EADDRINUSE
                  else f"cannot listen there ({getattr(exc, 'strerror', None) or exc})")
        raise ConfigError(f"{host}:{port}: {reason}") from None
    return sock


def serve(session: Session, sock: socket.socket, *, host: str = DEFAULT_HOST) -> None:
    """Serve the page on ``sock`` (:func:`listening_socket`) until interrupted (reviews the
    current model in the background)."""
    import uvicorn

    session.ensure_review()
    app = create_app(session, host=host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=sock.getsockname()[1],
                                           log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        session.close()
