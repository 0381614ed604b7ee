"""``medseg serve``: the browser app and its JSON API over one or more trained runs.

Each run's model is loaded once, when the app is created, and used under a lock, so concurrent requests
are safe. Uploads are read into memory, size-limited while they stream in, and decoded from their bytes
(:func:`medseg.web.uploads.decode_upload`); no name or path sent by a client is ever used on disk. Every
image goes through :func:`medseg.workflows.predict.segment_image`, the step ``medseg predict`` uses, so
the app and the command line give identical masks. Results are kept in a small in-memory cache under a
random id for the download links.

Instance runs (deep watershed) answer object counts per type, the differential count over the run's
``instance.differential`` types and a CSV of objects besides the instance-id mask.

Classification runs (``task: classify``) are loaded with
:class:`~medseg.workflows.classify.ClassificationPredictor` and answer the predicted class, the probability
of every class and a Grad-CAM heatmap of the predicted class: the same ``predict`` call and the same
:func:`~medseg.workflows.explain.classification_heatmap` as ``medseg predict --explain``, so the page,
``predictions.csv`` and ``heatmaps/`` of the command line agree.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from medseg import __version__
from medseg.errors import MedsegError
from medseg.web.uploads import ACCEPTED, DEFAULT_MAX_PIXELS, UploadError, decode_upload

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DOWNLOADS = {
    "mask.png": ("image/png", "mask_png"),
    "mask.tif": ("image/tiff", "mask_tiff"),
    "overlay.png": ("image/png", "overlay_png"),
    "counts.csv": ("text/csv; charset=utf-8", "counts_csv"),
    "objects.csv": ("text/csv; charset=utf-8", "objects_csv"),
    "heatmap.png": ("image/png", "heatmap_png"),
    "predictions.csv": ("text/csv; charset=utf-8", "predictions_csv"),
}
INSTANCE_ONLY = frozenset({"objects.csv"})
CLASSIFY_DOWNLOADS = ("heatmap.png", "predictions.csv")  # all a classification result has
_PNG_MAX_ID = 65535  # 16-bit PNG; instance masks with more objects are offered as TIFF only
# The colour layer of instance runs: fills translucent, outlines opaque and darker, so touching objects
# of one type stay apart however the page's opacity slider is set.
_FILL_ALPHA = 190
_OUTLINE_SHADE = 0.55
_CACHED_RESULTS = 32
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the model field, on top of the file itself
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'"
)
# The report is one self-contained file: inline CSS and data: pictures, no scripts.
_REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'"

log = logging.getLogger("medseg.web")


@dataclass
class ServedModel:
    """One run served by the app: its name in the API, folder, predictor and the locks around them."""

    name: str
    run_dir: Path
    # medseg.inference.Predictor, or a medseg.workflows.classify.ClassificationPredictor for a classification
    # run; imported lazily with torch
    predictor: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    report_lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, image: np.ndarray, source: str = "image"):
        """The predictor's ``predict`` under this model's lock (one inference at a time per model)."""
        with self.lock:
            return self.predictor.predict(image, source)

    def classify(self, image: np.ndarray, source: str = "image"):
        """A classification run's prediction and Grad-CAM heatmap of the predicted class, under the lock
        (Grad-CAM hooks the shared model).

        Returns:
            ``(ClassPrediction, Heatmap)``: :meth:`ClassificationPredictor.predict` and
            :func:`medseg.workflows.explain.classification_heatmap` for ``prediction.name``.
        """
        from medseg.workflows.explain import classification_heatmap

        with self.lock:
            prediction = self.predictor.predict(image, source)
            heatmap = classification_heatmap(self.predictor, image, source, class_name=prediction.name)
        return prediction, heatmap

    @property
    def config(self):
        return self.predictor.config

    @property
    def task(self) -> str:
        """``semantic``, ``instance`` or ``classify``."""
        return self.config.task or "semantic"


def create_app(
    runs: Sequence[str | Path],
    *,
    max_upload_mb: float = 50,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str = "auto",
    allowed_hosts: Sequence[str] | None = None,
    backend: str = "torch",
) -> FastAPI:
    """Build the web app serving ``runs`` (each model is loaded now, once).

    Args:
        runs: run folders; the first is the default model. Each is named by its folder name in the
            API (``name_2``, ... when two folders share a name).
        max_upload_mb: largest accepted upload in megabytes (larger: HTTP 413).
        max_pixels: largest accepted image in height x width pixels (larger: HTTP 422).
        device: ``auto``, ``cpu`` or ``cuda``, for every model.
        allowed_hosts: accepted ``Host`` headers (guards a loopback server against DNS rebinding);
            ``None`` accepts any.
        backend: ``torch``, or ``onnxruntime`` to run each run's ONNX export (``medseg export RUN``).

    Segmentation runs are loaded with :meth:`Predictor.from_run`, classification runs (``task: classify``)
    with :meth:`ClassificationPredictor.from_run` (PyTorch only).

    Raises:
        RunError: a folder is not a trained run.
        MedsegError: no runs, a limit that is not positive, or a classification run with
            ``backend="onnxruntime"``.
    """
    from medseg.inference.predictor import Predictor
    from medseg.workflows.classify import ClassificationPredictor, is_classification_run

    if not runs:
        raise MedsegError("serve: give at least one run folder")
    if max_upload_mb <= 0 or max_pixels <= 0:
        raise MedsegError("serve: --max-upload-mb and --max-pixels must be positive")
    models: dict[str, ServedModel] = {}
    for run in map(Path, runs):
        name, index = run.resolve().name, 1
        while name in models:
            index += 1
            name = f"{run.resolve().name}_{index}"
        if is_classification_run(run):
            if backend != "torch":
                raise MedsegError(
                    f"serve --backend {backend}: {run} is a classification run; classification runs "
                    "predict with torch (drop --backend or serve it separately)"
                )
            predictor = ClassificationPredictor.from_run(run, device=device)
        else:
            predictor = Predictor.from_run(run, device=device, backend=backend)
        models[name] = ServedModel(name, run, predictor)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    results = _ResultCache(_CACHED_RESULTS)

    app = FastAPI(
        title="medseg",
        version=__version__,
        description="Segment biomedical images with trained medseg runs. The browser app is at `/`.",
        docs_url=None,  # FastAPI's pages load Swagger/ReDoc from a CDN; /docs is rendered here instead
        redoc_url=None,
    )
    app.add_middleware(_Guard, max_body=max_bytes + _FORM_OVERHEAD, limit_text=f"{max_upload_mb:g} MB")
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(MedsegError)
    def _medseg_error(request: Request, exc: MedsegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 422))

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
            status_code=500,
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="Liveness check")
    def healthz() -> dict[str, Any]:
        """`{"status": "ok"}` while the server runs, with the version and the names of the served models."""
        return {"status": "ok", "version": __version__, "models": list(models)}

    @app.get("/api/models", summary="The served models and the upload limits")
    def list_models() -> dict[str, Any]:
        """Each model's name, task, architecture, input channels and classes (id, name, colour).

        Instance models list their instance types as `classes` (id 0 = background; an untyped model has
        one `objects` class), with `typed` and the `differential` types their percentages are over.
        Classification models (`task` `classify`) list the classes they choose among (id 0 is a class, not
        a background) and their input `image_size`.
        """
        return {
            "default": next(iter(models)),
            "models": [_describe(model) for model in models.values()],
            "limits": {"max_upload_mb": max_upload_mb, "max_pixels": max_pixels, "accepted": ACCEPTED},
        }

    @app.post(
        "/api/predict",
        summary="Segment or classify one image",
        responses={
            404: {"description": "unknown model"},
            413: {"description": "the upload is larger than --max-upload-mb"},
            415: {"description": "not an image medseg reads (or DICOM without pydicom)"},
            422: {"description": "corrupt image, too many pixels, a stack, or channels the model cannot use"},
        },
    )
    def predict(
        file: Annotated[UploadFile, File(description=f"the image: {ACCEPTED}; DICOM with pydicom")],
        model: Annotated[str | None, Form(description="model name from /api/models (default: first)")] = None,
    ) -> dict[str, Any]:
        """Segment an uploaded image with a served model.

        Answers the image size, per-class pixel counts and fractions (`classes`), the original as an
        8-bit PNG, the label mask (PNG, class ids), the overlay (PNG, as `medseg predict` writes it) and a
        colour layer (RGBA PNG, background transparent), all base64, plus download links for the mask
        (PNG, TIFF), the overlay and a CSV of the counts, valid for the last 32 results (`downloads` lists
        the ones this result has).

        Instance runs (`task` `instance`): the mask holds instance ids (16-bit PNG; beyond 65,535
        objects only the TIFF, and `mask_png_base64` is null), `classes` are the instance types with the
        pixels their objects cover, and the answer adds `objects` (how many), `counts` (rows `class`,
        `count`, `percent`: one per type, then `total`; `percent` is the share among the `differential`
        types, e.g. a differential white-cell count, and "" for other rows), `differential`, `typed`,
        and an `objects_csv` download (one row per object: label, class, area, centroid_y, centroid_x,
        mean_intensity, eccentricity). In the colour layer each object has its type's colour (untyped:
        a colour per object) and a darker, opaque outline.

        Classification runs (`task` `classify`) answer instead `prediction` (`id`, `class`,
        `probability`), `probabilities` (one `{id, name, probability, color}` per class, in class id
        order), `heatmap` (`class`, `layer`, `method` of the Grad-CAM map, and `zero` when no location
        had positive evidence), and besides the original: `overlay_png_base64` (the Grad-CAM heatmap of
        the predicted class blended over the image, as `medseg predict --explain` writes it in
        `heatmaps/`) and `heatmap_png_base64` (the colour-mapped heatmap alone, as `medseg explain`
        writes `*_heatmap.png`). Their downloads are `heatmap.png` (that overlay) and `predictions.csv`
        (one row as `medseg predict` writes: file, class, probability, `p_<class>` per class); they have
        no mask, counts or objects.
        """
        served = _pick_model(models, model)
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UploadError(f"the upload is larger than {max_upload_mb:g} MB (--max-upload-mb)", 413)
        label = _safe_name(file.filename)
        started = time.perf_counter()
        image = decode_upload(data, label, max_pixels=max_pixels)
        if served.task == "classify":
            return _classification_answer(served, image, label, results, started)
        if data[128:132] == b"DICM" and image.ndim == 2 and served.config.data.slicing:
            # a slice of a volume, for a run trained on sliced volumes: their window and context channels
            from medseg.workflows.volume import prepare_dicom_image, slice_settings

            image = prepare_dicom_image(image, slice_settings(served.config))
        from medseg.workflows.predict import segment_image

        result = segment_image(served, image, label)
        from medseg.report import display_channels, image_to_rgb8

        context = int(served.config.data.slicing.get("context", 0))

        mask = result.mask
        mask_png = _png(mask) if int(mask.max(initial=0)) <= _PNG_MAX_ID else None
        overlay_png = _png(result.overlay)
        entry = _Result(label, served.name, result, mask_png, overlay_png)
        result_id = results.put(entry)
        height, width = result.labels.shape
        downloads = {
            key: f"/api/results/{result_id}/{name}"
            for name, (_, key) in DOWNLOADS.items()
            if entry.unavailable(name) is None
        }
        answer = {
            "id": result_id,
            "model": served.name,
            "task": served.config.task,
            "regions": {name: list(values) for name, values in served.config.data.regions.items()},
            "filename": label,
            "width": width,
            "height": height,
            "channels": 1 if image.ndim == 2 else int(image.shape[-1]),
            "dtype": str(image.dtype),
            "classes": [
                {
                    "id": c.id,
                    "name": c.name,
                    "color": _hex(c.color),
                    "pixels": c.pixels,
                    "fraction": c.fraction,
                }
                for c in result.classes
            ],
            "seconds": round(time.perf_counter() - started, 4),
            "image_png_base64": _b64(_png(image_to_rgb8(display_channels(image, context)))),
            "mask_png_base64": _b64(mask_png) if mask_png is not None else None,
            "overlay_png_base64": _b64(overlay_png),
            "color_mask_png_base64": _b64(_png(color_layer(result))),
            "downloads": downloads,
        }
        if result.instances:
            instance = served.config.instance
            answer.update(
                objects=len(result.objects),
                counts=result.counts,
                differential=list(instance.differential),
                typed=bool(instance.classes),
            )
        return answer

    @app.get("/api/results/{result_id}/{name}", summary="Download a result file")
    def download(result_id: str, name: str) -> Response:
        """`mask.png`, `mask.tif` (class or instance ids), `overlay.png`, `counts.csv` of a recent
        segmentation result, and `objects.csv` (one row per object) of an instance run's result;
        `heatmap.png` (the Grad-CAM overlay) and `predictions.csv` (one row) of a classification result.
        A download the result does not have is a 404 that says why."""
        if name not in DOWNLOADS:
            raise HTTPException(404, f"no download {name!r}; choose one of {', '.join(DOWNLOADS)}")
        entry = results.get(result_id)
        if entry is None:
            raise HTTPException(404, "this result has expired; upload the image again")
        unavailable = entry.unavailable(name)
        if unavailable:
            raise HTTPException(404, unavailable)
        media_type, _ = DOWNLOADS[name]
        stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", entry.label) or "image"
        return Response(
            entry.file(name),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{stem}_{name}"'},
        )

    @app.get("/report/{model}", summary="The run's report.html", response_class=HTMLResponse)
    def report(model: str) -> HTMLResponse:
        """The run's self-contained report; built first (as `medseg report` does) when the run has none."""
        served = _pick_model(models, model)
        path = served.run_dir / "report.html"
        with served.report_lock:
            if not path.is_file():
                from medseg.report import build_report

                try:
                    build_report(served.run_dir)
                except Exception as exc:
                    log.exception("could not build %s", path)
                    message = f"could not build the report of {served.name}: {type(exc).__name__}: {exc}"
                    return HTMLResponse(f"<p>{escape(message)}</p>", status_code=500)
        return HTMLResponse(
            path.read_text(encoding="utf-8"), headers={"Content-Security-Policy": _REPORT_CSP}
        )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_api_page(app.openapi()))

    return app


def serve(
    runs: Sequence[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 50,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str = "auto",
    backend: str = "torch",
) -> None:
    """Run the web app with uvicorn until interrupted (``medseg serve``).

    On a loopback address only requests naming a loopback host are answered; any other address serves
    everyone who can reach it, so a warning is printed.
    """
    import uvicorn

    loopback = host in LOOPBACK_HOSTS
    allowed = [*LOOPBACK_HOSTS, "[::1]"] if loopback else None
    app = create_app(
        runs,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        device=device,
        allowed_hosts=allowed,
        backend=backend,
    )
    if not loopback:
        print(f"medseg: warning: serving on {host}: anyone who can reach this address can use the models")
    shown = f"[{host}]" if ":" in host else host
    print(f"medseg: serving {', '.join(map(str, runs))} at http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _pick_model(models: dict[str, ServedModel], name: str | None) -> ServedModel:
    if not name:
        return next(iter(models.values()))
    if name not in models:
        raise HTTPException(404, f"unknown model {name!r}; served models: {', '.join(models)}")
    return models[name]


def _describe(model: ServedModel) -> dict[str, Any]:
    """A model for ``/api/models``; an instance model's classes are its instance types."""
    from medseg.report import class_colors
    from medseg.workflows.predict import type_colors

    config = model.config
    data = config.data
    extra: dict[str, Any] = {}
    if config.task == "classify":
        names = data.class_names
        colors = classifier_colors(config)
        extra = {"image_size": config.classify.image_size}
    elif config.task == "instance":
        types = list(config.instance.classes) or ["objects"]
        names = ["background", *types]
        colors = type_colors(types, data.colors)
        extra = {"typed": bool(config.instance.classes), "differential": list(config.instance.differential)}
    else:
        names = data.class_names
        colors = class_colors(data.labels, data.colors)
    return {
        "name": model.name,
        "task": config.task,
        "architecture": config.model.name,
        "in_channels": data.in_channels,
        "classes": [{"id": i, "name": n, "color": _hex(colors[i])} for i, n in enumerate(names)],
        **extra,
        "report_url": f"/report/{model.name}",
    }


def classifier_colors(config: Any) -> list[tuple[int, int, int]]:
    """Display colours of a classification run's classes in id order: a ``data.colors`` entry by name,
    else the palette (every class is a real class, so none is the background's black)."""
    from medseg.workflows.predict import type_colors

    return type_colors(config.data.class_names, config.data.colors)[1:]


def _classification_answer(
    served: ServedModel, image: np.ndarray, label: str, results: _ResultCache, started: float
) -> dict[str, Any]:
    """``/api/predict``'s answer for a classification run (see the route's docstring)."""
    from medseg.explain import apply_colormap
    from medseg.report import image_to_rgb8
    from medseg.workflows.classify import prediction_row

    prediction, heatmap = served.classify(image, label)
    names = served.predictor.class_names
    colors = classifier_colors(served.config)
    overlay_png = _png(heatmap.overlay)
    row = prediction_row(label, prediction.probabilities, names)
    entry = _ClassResult(label, served.name, row, overlay_png)
    result_id = results.put(entry)
    height, width = image.shape[:2]
    return {
        "id": result_id,
        "model": served.name,
        "task": "classify",
        "filename": label,
        "width": width,
        "height": height,
        "channels": 1 if image.ndim == 2 else int(image.shape[-1]),
        "dtype": str(image.dtype),
        "prediction": {
            "id": prediction.index,
            "class": prediction.name,
            "probability": float(prediction.probabilities[prediction.index]),
        },
        "probabilities": [
            {"id": i, "name": name, "probability": float(p), "color": _hex(colors[i])}
            for i, (name, p) in enumerate(zip(names, prediction.probabilities, strict=True))
        ],
        "heatmap": {
            "class": heatmap.class_name,
            "layer": heatmap.layer,
            "method": heatmap.method,
            "zero": not heatmap.cam.any(),
        },
        "seconds": round(time.perf_counter() - started, 4),
        "image_png_base64": _b64(_png(image_to_rgb8(image))),
        "overlay_png_base64": _b64(overlay_png),
        "heatmap_png_base64": _b64(_png(apply_colormap(heatmap.cam))),
        "downloads": {
            DOWNLOADS[name][1]: f"/api/results/{result_id}/{name}"
            for name in DOWNLOADS
            if entry.unavailable(name) is None
        },
    }


def color_layer(result: Any) -> np.ndarray:
    """The page's colour layer of a segmentation, drawn over the original with an opacity slider.

    Semantic results: each pixel in its class colour, opaque. Instance results: each object filled in its
    type's colour (untyped objects: a colour per object, as in the overlay) at ``_FILL_ALPHA``, with an
    opaque outline in a darker shade of that colour, so touching objects stay apart.

    Args:
        result: a :class:`medseg.workflows.predict.Segmentation`.

    Returns:
        ``(H, W, 4)`` uint8 RGBA; background fully transparent.
    """
    labels = result.labels
    layer = np.zeros((*labels.shape, 4), np.uint8)
    if not result.instances:
        colors = np.asarray([c.color for c in result.classes], np.uint8).reshape(-1, 3)
        if result.regions is not None:  # mask values: the mean colour of the regions each holds
            from medseg.report.overlays import region_value_colors

            size = int(labels.max(initial=0)) + 1
            colors = region_value_colors(result.regions, colors.tolist(), size)
        layer[..., :3] = colors[labels]
        layer[..., 3] = np.where(labels > 0, 255, 0)
        return layer
    from skimage.segmentation import find_boundaries

    from medseg.report.overlays import instance_colors

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return layer
    table = instance_colors(ids)
    type_color = {c.name: c.color for c in result.classes[1:]}
    typed = [(row["label"], type_color[row["class"]]) for row in result.objects if row["class"] in type_color]
    if typed:
        typed_ids, colors = zip(*typed)
        table[np.searchsorted(ids, typed_ids)] = colors
    foreground = labels > 0
    rgb = table[np.searchsorted(ids, labels[foreground])]
    layer[foreground, :3] = rgb
    layer[foreground, 3] = _FILL_ALPHA
    edges = find_boundaries(labels, mode="inner") & foreground
    layer[edges, :3] = np.round(table[np.searchsorted(ids, labels[edges])] * _OUTLINE_SHADE).astype(np.uint8)
    layer[edges, 3] = 255
    return layer


def _safe_name(filename: str | None) -> str:
    """The client's file name reduced to a harmless label for messages and download names."""
    base = re.split(r"[\\/]", filename or "")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:80] or "upload"


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of an array, with the pixels :func:`medseg.io.write_image` stores.

    Compression level 1: on 256x256 phantoms it is about 3x faster than Pillow's default and the
    files are within 2% of its size, and encoding is most of a request's time outside the model.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class _Result:
    label: str
    model: str
    segmentation: Any  # medseg.workflows.predict.Segmentation
    mask_png: bytes | None  # None: instance ids beyond 16 bits
    overlay_png: bytes

    def unavailable(self, name: str) -> str | None:
        """Why download ``name`` does not exist for this result, or None when it does."""
        if name in CLASSIFY_DOWNLOADS:
            return f"{name}: {self.model} is a segmentation model; only classification results have {name}"
        if name in INSTANCE_ONLY and not self.segmentation.instances:
            return f"{name}: {self.model} is not an instance model, so its results have no objects"
        if name == "mask.png" and self.mask_png is None:
            return f"mask.png: more than {_PNG_MAX_ID:,} objects do not fit a 16-bit PNG; take mask.tif"
        return None

    def file(self, name: str) -> bytes:
        """The bytes of download ``name`` (one of :data:`DOWNLOADS` that is not :meth:`unavailable`)."""
        if name == "mask.png" and self.mask_png is not None:
            return self.mask_png
        if name == "overlay.png":
            return self.overlay_png
        if name == "mask.tif":
            import tifffile

            buffer = io.BytesIO()
            tifffile.imwrite(buffer, self.segmentation.mask, compression="zlib", metadata={"axes": "YX"})
            return buffer.getvalue()
        if name == "objects.csv":
            from medseg.postprocess.objects import OBJECT_COLUMNS

            return _csv_bytes(self.segmentation.objects, OBJECT_COLUMNS)
        if self.segmentation.instances:
            return _csv_bytes(self.segmentation.counts, ["class", "count", "percent"])
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["class_id", "class", "pixels", "fraction"])
        writer.writerows((c.id, c.name, c.pixels, f"{c.fraction:.6f}") for c in self.segmentation.classes)
        return text.getvalue().encode("utf-8")


@dataclass
class _ClassResult:
    """A classification result kept for its downloads."""

    label: str
    model: str
    row: dict[str, Any]  # prediction_row: file, class, probability, p_<class>...
    heatmap_png: bytes  # the Grad-CAM overlay, as `medseg predict --explain` writes it

    def unavailable(self, name: str) -> str | None:
        """Why download ``name`` does not exist for this result, or None when it does."""
        if name in CLASSIFY_DOWNLOADS:
            return None
        return (
            f"{name}: {self.model} is a classification model; its results have "
            f"{' and '.join(CLASSIFY_DOWNLOADS)}"
        )

    def file(self, name: str) -> bytes:
        """The bytes of ``heatmap.png`` or ``predictions.csv``."""
        if name == "heatmap.png":
            return self.heatmap_png
        return _csv_bytes([self.row], list(self.row))


def _csv_bytes(rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> bytes:
    """CSV bytes with the cells :func:`medseg.io.write_csv_atomic` writes (floats to 6 significant
    digits), so a download matches the file ``medseg predict`` writes."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return text.getvalue().encode("utf-8")


class _ResultCache:
    """The last ``size`` results under unguessable ids, oldest dropped first; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, _Result | _ClassResult] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, entry: _Result | _ClassResult) -> str:
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = entry
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> _Result | _ClassResult | None:
        with self._lock:
            return self._items.get(key)


class _Guard:
    """ASGI middleware: refuse request bodies over ``max_body`` bytes (413) and add security headers.

    A declared ``Content-Length`` is checked before anything is read; a body without one is counted as
    it streams in, and the app's answer is replaced by the 413 once the limit is passed.
    """

    def __init__(self, app, *, max_body: int, limit_text: str) -> None:
        self.app = app
        self.max_body = max_body
        self.limit_text = limit_text

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _json_bytes({"detail": f"the upload is larger than {self.limit_text} (--max-upload-mb)"})
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _send_json(send, 413, too_large)
            return
        received = 0
        over = False
        started = False

        async def counting_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                if not started:
                    started = True
                    await _send_json(send, 413, too_large)
                return
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", _PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _send_json(send, 413, too_large)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    import json

    return json.dumps(payload).encode("utf-8")


async def _send_json(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _api_page(schema: dict[str, Any]) -> str:
    """A plain HTML rendering of the OpenAPI schema (no scripts, nothing from the internet)."""
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            params = [p["name"] for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {})
            if body:
                params.append(f"body: {', '.join(body)}")
            responses = ", ".join(
                f"{code} {r.get('description', '')}" for code, r in op.get("responses", {}).items()
            )
            description = _markdown_code(escape(op.get("description", ""))).replace("\n\n", "</p><p>")
            rows.append(
                f"<section><h2><code>{escape(method.upper())} {escape(path)}</code></h2>"
                f"<p><b>{escape(op.get('summary', ''))}</b></p>"
                f"<p>{description}</p>"
                f"<p>Parameters: {escape(', '.join(params) or 'none')}</p>"
                f"<p>Responses: {escape(responses)}</p></section>"
            )
    info = schema.get("info", {})
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>medseg API</title>'
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/style.css"></head><body class="docs">'
        f"<h1>{escape(info.get('title', ''))} {escape(info.get('version', ''))} API</h1>"
        f"<p>{_markdown_code(escape(info.get('description', '')))} The machine-readable schema is "
        '<a href="/openapi.json">/openapi.json</a>.</p>' + "".join(rows) + "</body></html>"
    )


def _markdown_code(text: str) -> str:
    """`code` spans of an (already escaped) description as <code> elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
