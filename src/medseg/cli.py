"""The ``medseg`` command line: thin wrappers over the public functions of the package.

Heavy libraries (torch, matplotlib) are imported inside the commands, so ``medseg --help`` and
``medseg --version`` are instant. A :class:`~medseg.errors.MedsegError` becomes one line on stderr and
exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medseg import __version__
from medseg.errors import MedsegError

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with _stdout_on_main_process():
            result = args.func(args)
        return int(result or 0)
    except MedsegError as exc:
        if args.debug:
            raise
        print(f"medseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(
            "\nmedseg: interrupted (files already written are complete; `medseg train --resume` continues)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"medseg: unexpected error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


@contextlib.contextmanager
def _stdout_on_main_process():
    """Under torchrun every rank runs the command: only rank 0 prints its results (errors: every rank)."""
    from medseg.engine.distributed import is_main_process

    if is_main_process():
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own --debug default must not reset `medseg --debug COMMAND`
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Biomedical image segmentation: from images and masks to a model, metrics and reports.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="the main job end to end on built-in phantom data")
    p.add_argument(
        "--out", default="runs/demo", help="folder for data, run and predictions (default runs/demo)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny settings (seconds, not minutes), for smoke tests"
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser("doctor", parents=[common], help="versions, threads, bf16 support, where runs go")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("models", parents=[common], help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'unet*'")
    p.set_defaults(func=_models)

    p = sub.add_parser("phantom", parents=[common], help="write a synthetic dataset with ground truth")
    phantom = p.add_subparsers(title="phantoms", metavar="KIND", required=True)
    b = phantom.add_parser(
        "blood", parents=[common], help="stained blood smears: red cells and 5 white-cell types"
    )
    b.add_argument("--out", required=True, help="dataset folder to write (native nnU-Net layout)")
    b.add_argument("--n", type=int, default=50, help="number of images (default 50)")
    b.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument(
        "--crops",
        action="store_true",
        help="write one crop per white cell, labelled with its type (OUT/<type>/*.png + OUT/labels.csv)",
    )
    b.add_argument("--crop", type=int, default=64, help="crop side in pixels with --crops (default 64)")
    b.set_defaults(func=_phantom_blood)
    nu = phantom.add_parser(
        "nuclei", parents=[common], help="fluorescent nuclei: touching, overlapping, instance labels"
    )
    nu.add_argument("--out", required=True, help="dataset folder to write (native nnU-Net layout)")
    nu.add_argument("--n", type=int, default=50, help="number of images (default 50)")
    nu.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    nu.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    nu.add_argument(
        "--frames",
        type=int,
        help="write a time-lapse of T frames instead (moving, dividing, entering/leaving nuclei) in Cell "
        "Tracking Challenge layout with full ground truth: OUT/01/t000.tif, OUT/01_GT/{TRA,SEG}",
    )
    nu.add_argument("--sequences", type=int, default=1, help="with --frames: number of movies (01, 02, ...)")
    nu.set_defaults(func=_phantom_nuclei)
    gi = phantom.add_parser(
        "gi",
        parents=[common],
        help="abdominal MR in the Kaggle UW-Madison GI Tract layout (train.csv RLEs, 16-bit PNG scans); "
        "then: medseg data import uw-madison-gi OUT DATASET",
    )
    gi.add_argument(
        "--out", required=True, help="competition folder to write (train.csv, train/, phantom.json)"
    )
    gi.add_argument("--cases", type=int, default=4, help="number of patients (default 4)")
    gi.add_argument("--days", type=int, default=2, help="scan days per patient (default 2)")
    gi.add_argument("--slices", type=int, default=24, help="slices per scan day (default 24)")
    gi.add_argument(
        "--size", type=_height_width, default=(96, 112), help="slice size H,W or one side N (default 96,112)"
    )
    gi.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gi.set_defaults(func=_phantom_gi)

    p = sub.add_parser("data", parents=[common], help="check and import datasets")
    data = p.add_subparsers(title="data commands", metavar="ACTION", required=True)
    c = data.add_parser("check", parents=[common], help="list every problem of a dataset and summarise it")
    c.add_argument("dataset", help="dataset folder, or a classification CSV (path,label[,group])")
    c.add_argument("--csv", help="classification CSV of path,label[,group] (relative to DATASET)")
    c.add_argument("--classes", help="class names for an images/ + masks/ folder, e.g. background,cell")
    c.add_argument(
        "--ignore-index", type=int, help="label value for unannotated pixels, allowed besides classes"
    )
    c.add_argument(
        "--group-by",
        metavar="REGEX",
        help="regex whose first group is the patient/volume id (see data.group_by)",
    )
    c.set_defaults(func=_data_check)
    imp = data.add_parser("import", parents=[common], help="convert another dataset layout to the native one")
    formats = imp.add_subparsers(title="formats", metavar="FORMAT", required=True)
    d = formats.add_parser(
        "deepcell", parents=[common], help="DeepCell npz: X (N,H,W,C) images, y (N,H,W,1|2) instance labels"
    )
    d.add_argument("src", help="the .npz archive")
    d.add_argument("dst", help="dataset folder to create")
    d.add_argument("--y-channel", type=int, default=0, help="channel of y to import (TissueNet: 0 cells)")
    d.add_argument("--channel-names", help="one name per channel of X, e.g. nuclear,membrane")
    d.add_argument("--prefix", help="case name prefix (default: the archive's name)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    d.set_defaults(func=_data_import_deepcell)
    importers = {}
    for name, help_text, src_help in (
        ("folders", "images/ + masks/ folders: class-id or colour masks", "folder with images/ and masks/"),
        ("coco", "COCO instance JSON (polygons, RLE) + its images", "the COCO annotation .json"),
        ("cellpose", "Cellpose *_seg.npy files + their images", "folder of *_seg.npy files (or one)"),
        ("imagefolder", "class-per-folder classification set (SRC/<class>/*.png)", "folder of class folders"),
        (
            "ctc",
            "Cell Tracking Challenge: frames with SEG ground truth",
            "folder holding 01/, 01_GT/SEG, ...",
        ),
        ("msd", "Medical Segmentation Decathlon 3D NIfTI, sliced to 2D", "folder with dataset.json"),
        ("nnunet", "nnU-Net v2 raw 3D NIfTI (CASE_0000.nii.gz), sliced to 2D", "folder with dataset.json"),
        (
            "uw-madison-gi",
            "Kaggle UW-Madison GI tract: RLE train.csv + 16-bit PNG scans, organs as overlapping regions",
            "competition folder with train.csv and train/",
        ),
    ):
        f = formats.add_parser(name, parents=[common], help=help_text)
        f.add_argument("src", help=src_help)
        f.add_argument("dst", help="folder to create")
        f.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
        f.set_defaults(func=_data_import, import_format=name)
        importers[name] = f
    for name in ("folders", "coco", "cellpose", "imagefolder"):  # ctc groups its cases by sequence itself
        importers[name].add_argument(
            "--group-by",
            metavar="REGEX",
            help="regex on the case (file) name whose first group keeps one patient's images together, "
            "e.g. '^(patient\\d+)_'",
        )
    importers["folders"].add_argument(
        "--palette", help="colour masks: 'background=0,0,0;tumour=255,0,0' (default: inferred, black first)"
    )
    importers["folders"].add_argument(
        "--labels", help="class names in id order, e.g. background,tumour (default class_1, class_2, ...)"
    )
    importers["coco"].add_argument("--images", help="folder the JSON's file_name paths are relative to")
    importers["ctc"].add_argument("--sequences", help="sequences to import, e.g. 01,02 (default: all)")
    for name in ("msd", "nnunet"):
        nifti = importers[name]
        nifti.add_argument("--axis", choices=("z", "y", "x"), default="z", help="voxel axis to slice along")
        nifti.add_argument(
            "--context", type=int, default=0, help="K neighbouring slices each side as extra channels (2.5D)"
        )
        nifti.add_argument(
            "--window", help="CT: clip to LOW,HIGH, scale to 0..1; write --window=-160,240 if LOW < 0"
        )
        nifti.add_argument("--percentile", help="MR: map LOW,HIGH percentiles of each volume to 0..1")
        nifti.add_argument(
            "--keep-empty", type=float, default=0.1, help="fraction of slices without foreground to keep"
        )
        nifti.add_argument("--seed", type=int, default=0, help="seed of the empty-slice choice")
    uw = importers["uw-madison-gi"]  # 2D scans kept as stored: no axis, no intensity scaling
    uw.add_argument(
        "--context", type=int, default=0, help="K neighbouring slices each side as extra channels (2.5D)"
    )
    uw.add_argument(
        "--keep-empty", type=float, default=0.1, help="fraction of slices without any organ to keep"
    )
    uw.add_argument("--seed", type=int, default=0, help="seed of the empty-slice choice")

    p = sub.add_parser("train", parents=[common], help="train a model on a dataset")
    p.add_argument("dataset", nargs="?", help="dataset folder (optional with --resume)")
    p.add_argument("--out", help="run folder (default runs/<dataset>_<model>)")
    p.add_argument(
        "--task",
        choices=("semantic", "instance", "classify"),
        help="semantic (class per pixel), instance (deep watershed) or classify (one class per image); "
        "default: what dataset.json says, classify for a class-per-folder set or CSV",
    )
    p.add_argument("--model", help="model name (see `medseg models`), default unet")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--config", help="YAML config file")
    _add_set_option(p, "override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--classes", help="class names for an images/ + masks/ folder, e.g. background,cell")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", parents=[common], help="score a run on a labelled dataset")
    p.add_argument("run", help="run folder")
    p.add_argument("dataset", nargs="?", help="labelled dataset (default: the run's validation cases)")
    p.add_argument(
        "--split",
        choices=("auto", "val", "all"),
        default="auto",
        help="cases to score: val, all, or auto (val on the training dataset, else all)",
    )
    p.add_argument("--spacing", type=float, help="pixel size for HD95 (default 1 pixel)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", parents=[common], help="segment images with a run")
    p.add_argument("run", help="run folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format", choices=("png", "tif"), help="label mask format (default png; tif for instance runs)"
    )
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips/rotations")
    p.add_argument(
        "--tile", type=int, help="tile size for large images (default from the run: 512; 0 = never)"
    )
    _add_set_option(p, "override an inference setting, e.g. --set inference.overlap=0.5")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the torch model (default) or RUN/export/model.onnx (write it first: medseg export RUN)",
    )
    p.add_argument(
        "--explain", action="store_true", help="classification runs: Grad-CAM heatmaps in OUT/heatmaps/"
    )
    p.add_argument(
        "--tiles",
        nargs="?",
        const=0,  # --tiles alone: the run's input size (0 is never a SIZE: _tile_size rejects it)
        type=_tile_size,
        metavar="SIZE",
        help="classification runs: classify a grid of tiles of each image (default SIZE: the run's input "
        "size) into OUT/tiles/: per-tile CSV, class map, overlay; put it after the inputs",
    )
    p.set_defaults(func=_predict)

    p = sub.add_parser("explain", parents=[common], help="Grad-CAM heatmaps or feature maps for one image")
    p.add_argument("run", help="run folder (classification or segmentation)")
    p.add_argument("image", help="image file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--class",
        dest="class_name",
        help="class to explain (default: the predicted class; segmentation: the largest predicted one)",
    )
    p.add_argument("--layer", help="module name of the Grad-CAM layer (default: the model's own choice)")
    p.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam", help="default gradcam")
    p.add_argument("--feature-maps", action="store_true", help="write a gallery of layer activations instead")
    p.add_argument("--layers", help="layers for --feature-maps, comma-separated (default: each stage)")
    p.add_argument("-k", type=int, default=16, help="channels shown per layer with --feature-maps (16)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_explain)

    p = sub.add_parser("export", parents=[common], help="export a run's network to ONNX (RUN/export)")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default 17)")
    p.add_argument("--out", help="export folder (default RUN/export, where --backend onnxruntime looks)")
    p.set_defaults(func=_export)

    p = sub.add_parser("report", parents=[common], help="write RUN/report.html")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "track",
        parents=[common],
        help="segment a time-lapse with an instance run (or read label masks) and link cells over time",
        description="Writes a Cell Tracking Challenge result (maskNNN.tif, res_track.txt), tracks.csv, "
        "a GIF of the tracked movie, a lineage plot and report.html into --out.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="RUN FRAMES",
        help="an instance run and the movie (a CTC frame folder such as 01/ or a multi-page TIFF); "
        "with --masks only the movie, optional",
    )
    p.add_argument(
        "--masks", help="track these label images instead of segmenting: folder of *NNN.tif or TIFF stack"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gt", help="CTC ground truth folder (01_GT) to score the tracks against")
    _add_set_option(p, "tracking setting, e.g. --set max_gap=2 --set max_distance=30 (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.set_defaults(func=_track)

    p = sub.add_parser(
        "evaluate-tracking",
        parents=[common],
        help="score a CTC tracking result against ground truth: TRA, DET, SEG, divisions, ID switches",
    )
    p.add_argument(
        "result", help="result folder (maskNNN.tif + res_track.txt), e.g. the --out of medseg track"
    )
    p.add_argument("gt", help="ground truth folder, e.g. 01_GT (TRA/ with man_track.txt; SEG/ optional)")
    p.add_argument(
        "--division-tolerance", type=int, default=0, help="frames a division may be early or late (default 0)"
    )
    p.set_defaults(func=_evaluate_tracking)

    p = sub.add_parser("serve", parents=[common], help="the browser app and its JSON API")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders; the first is the default model")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=50, help="largest upload in MB (default 50)")
    p.add_argument(
        "--max-pixels", type=int, default=None, help="largest image, height x width (default 25000000)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the torch model (default) or RUN/export/model.onnx (write it first: medseg export RUN)",
    )
    p.set_defaults(func=_serve)
    return parser


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def _split_classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _demo(args: argparse.Namespace) -> int:
    from medseg.workflows.demo import demo

    demo(args.out, quick=args.quick)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from medseg.doctor import doctor_report

    print(doctor_report())
    return 0


def _models(args: argparse.Namespace) -> int:
    from medseg.models import count_parameters, create_model, describe_model, list_models

    names = list_models(args.pattern)
    width = max((len(n) for n in names), default=4)
    print(f"{'name':<{width}}  {'params':>10}  description")
    import torch

    for name in names:
        with torch.device("meta"):  # shapes only: counting needs no memory or initialisation
            params = count_parameters(create_model(name, in_channels=3, num_classes=2))
        print(f"{name:<{width}}  {params:>10,}  {describe_model(name)}")
    from medseg.models.classifiers import create_classifier, describe_classifier, list_classifiers

    classifiers = list_classifiers(args.pattern)
    if classifiers:
        width = max(len(n) for n in classifiers)
        print(f"\nclassifiers (--task classify)\n{'name':<{width}}  {'params':>10}  description")
    for name in classifiers:
        try:
            with torch.device("meta"):
                params = count_parameters(create_classifier(name, in_channels=3, num_classes=2))
            shown = f"{params:>10,}"
        except Exception:  # a classifier needing an optional package (einops for ViT) is still listed
            shown = f"{'-':>10}"
        print(f"{name:<{width}}  {shown}  {describe_classifier(name)}")
    return 0


def _phantom_blood(args: argparse.Namespace) -> int:
    if args.crops:
        return _phantom_blood_crops(args)
    from medseg.data.phantoms import write_blood_dataset

    out = write_blood_dataset(args.out, args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} blood smear phantoms to {out}")
    return 0


def _phantom_blood_crops(args: argparse.Namespace) -> int:
    from medseg.data.classification import open_classification_dataset
    from medseg.data.phantoms.crops import write_wbc_crops

    out = write_wbc_crops(args.out, args.n, size=args.size, crop=args.crop, seed=args.seed)
    counts = open_classification_dataset(out / "labels.csv").class_counts()
    print(
        f"wrote {sum(counts.values())} white-cell crops of {args.crop}x{args.crop} from {args.n} smears to "
        f"{out} ({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )
    print(f"next: medseg train {out / 'labels.csv'} --task classify --model simple_cnn")
    return 0


def _phantom_nuclei(args: argparse.Namespace) -> int:
    from medseg.data.phantoms import write_nuclei_dataset

    if args.frames is not None:
        import json

        from medseg.data.phantoms.timelapse import write_nuclei_movie

        out = write_nuclei_movie(
            args.out, args.frames, size=args.size, seed=args.seed, sequences=args.sequences
        )
        for seq in json.loads((out / "phantom.json").read_text(encoding="utf-8"))["sequences"]:
            print(
                f"wrote movie {out / seq['sequence']}: {args.frames} frames of {args.size}x{args.size}, "
                f"{seq['tracks']} tracks, {seq['divisions']} divisions (ground truth in {seq['sequence']}_GT)"
            )
        return 0
    out = write_nuclei_dataset(args.out, args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} fluorescent nuclei phantoms ({args.size}x{args.size}, instance labels) to {out}")
    return 0


def _height_width(text: str) -> tuple[int, int]:
    """``"96,112"`` -> (96, 112); ``"96"`` -> (96, 96)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected H,W or N in pixels, got {text!r}")
    return (values[0], values[-1])


def _phantom_gi(args: argparse.Namespace) -> int:
    import json

    from medseg.data.phantoms import write_gi_dataset

    out = write_gi_dataset(
        args.out, cases=args.cases, days=args.days, slices=args.slices, size=args.size, seed=args.seed
    )
    counts = json.loads((out / "phantom.json").read_text(encoding="utf-8"))["counts"]
    print(
        f"wrote {counts['slices']} slices ({args.size[0]}x{args.size[1]}, 16-bit) of {args.cases} cases x "
        f"{args.days} days to {out}: {counts['slices_with_organ']} with an organ, large/small bowel overlap "
        f"in {counts['large_small_bowel_overlap']}"
    )
    print(f"next: medseg data import uw-madison-gi {out} DATASET")
    return 0


def _data_import_deepcell(args: argparse.Namespace) -> int:
    import json

    from medseg.data.importers import import_dataset

    dst = import_dataset(
        "deepcell",
        args.src,
        args.dst,
        y_channel=args.y_channel,
        channel_names=_split_classes(args.channel_names),
        prefix=args.prefix,
        overwrite=args.overwrite,
    )
    meta = json.loads((dst / "dataset.json").read_text(encoding="utf-8"))
    height, width = meta["medseg"]["image_size"]
    print(
        f"imported {meta['numTraining']} cases of {width}x{height} (WxH) to {dst}: "
        f"channels {', '.join(meta['channel_names'].values())}; "
        f"{meta['medseg']['objects_per_image']:.1f} objects per image on average"
    )
    return 0


_IMPORT_OPTIONS = ("palette", "labels", "images", "group_by", "sequences", "overwrite")
_IMPORT_OPTIONS += ("axis", "context", "window", "percentile", "keep_empty", "seed")  # msd / nnunet


def _data_import(args: argparse.Namespace) -> int:
    """`medseg data import FORMAT SRC DST` for the formats whose options are plain keyword arguments."""
    from medseg.data.importers import import_dataset

    options = {key: getattr(args, key) for key in _IMPORT_OPTIONS if hasattr(args, key)}
    if "labels" in options:
        options["labels"] = _split_classes(options["labels"])
    dst = import_dataset(args.import_format, args.src, args.dst, **options)
    print(_import_summary(dst))
    return 0


def _import_summary(dst: Path) -> str:
    """What an import wrote, in a few lines: counts, classes, the importer's notes, the next step."""
    import json

    if not (dst / "dataset.json").is_file():
        from medseg.data.classification import open_classification_dataset

        data = open_classification_dataset(dst / "labels.csv")
        counts = ", ".join(f"{name} {count}" for name, count in data.class_counts().items())
        groups = len({item.group for item in data.items})
        return (
            f"imported {len(data.items)} images of {len(data.class_names)} classes ({counts}) in {groups} "
            f"groups to {dst}\nnext: medseg train {dst / 'labels.csv'} --task classify"
        )
    meta = json.loads((dst / "dataset.json").read_text(encoding="utf-8"))
    extra = meta.get("medseg", {})
    if extra.get("task") == "instance":
        what = f"instance labels, {extra['objects_per_image']:.1f} objects per image"
        if extra.get("instance_classes"):
            what += f"; types {', '.join(extra['instance_classes'])}"
    else:
        what = f"classes {', '.join(meta['labels'])}"
    lines = [f"imported {meta['numTraining']} cases to {dst}: {what}"]
    lines += [f"  {note}" for note in extra.get("notes", [])]
    if extra.get("group_by"):
        lines.append(
            "medseg train keeps each group on one side of the split (medseg.group_by in dataset.json)"
        )
    return "\n".join(lines)


def _data_check(args: argparse.Namespace) -> int:
    from medseg.workflows.classify import is_classification_dataset

    if args.csv or is_classification_dataset(args.dataset):
        return _data_check_classification(args)
    from medseg.data.dataset import check_dataset

    report = check_dataset(
        args.dataset,
        classes=_split_classes(args.classes),
        ignore_index=args.ignore_index,
        group_by=getattr(args, "group_by", None),
    )
    s = report.summary
    if s:
        print(f"dataset   {s['dataset']} ({s['layout']} layout)")
        print(f"cases     {s['cases']} ({s['labelled']} labelled)")
        print(f"channels  {', '.join(f'{k} ({v} cases)' for k, v in s['channels'].items()) or '-'}")
        print(f"sizes     {_first_sizes(s['sizes'])}")
        print("classes   " + ", ".join(f"{k} {v:.2%}" for k, v in s["class_fractions"].items()))
        if "objects" in s:
            objects = s["objects"]
            typed = ", ".join(f"{k} {v}" for k, v in objects.items() if k)
            print(f"objects   {sum(objects.values())} instances{': ' + typed if typed else ''}")
        if "group_by" in s:
            print(f"groups    {s['groups']} by group_by '{s['group_by']}'")
        if "suggested_group_by" in s:  # a warning, not a problem: the exit code stays
            g = s["suggested_group_by"]
            print(
                f"warning: case names suggest several images per patient ('{g['pattern']}' forms "
                f"{g['groups']} groups of {g['cases']} cases) but no group_by is set, so a random split can "
                "put one patient in train and val; add group_by to dataset.json's medseg section or train "
                f"with --set 'data.group_by={g['pattern']}'",
                file=sys.stderr,
            )
    return _check_verdict(report)


def _first_sizes(sizes: dict[str, int]) -> str:
    items = list(sizes.items())
    shown = ", ".join(f"{k} ({v})" for k, v in items[:5]) + (" ..." if len(items) > 5 else "")
    return shown or "-"


def _check_verdict(report) -> int:
    """Print 'no problems found' (exit 0) or every problem on stderr (exit 2)."""
    if report.ok:
        print("no problems found")
        return 0
    print(f"{len(report.problems)} problem(s):", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_USAGE


def _data_check_classification(args: argparse.Namespace) -> int:
    from medseg.data.classification import check_classification_dataset

    report = check_classification_dataset(args.dataset, csv=args.csv, classes=_split_classes(args.classes))
    s = report.summary
    if s:
        print(f"dataset   {s['dataset']} (classification, {s['layout']} layout)")
        print(f"images    {s['images']} in {s['groups']} group(s)")
        print(f"channels  {', '.join(f'{k} ({v} images)' for k, v in s['channels'].items()) or '-'}")
        print(f"sizes     {_first_sizes(s['sizes'])}")
        total = max(1, s["images"])
        counts = s["class_counts"]
        print("classes   " + ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in counts.items()))
        imbalance = s["imbalance"]
        largest, smallest = imbalance["largest"], imbalance["smallest"]
        if largest is not None:
            ratio = imbalance["ratio"]
            ratio = f"{ratio:.2f}x" if ratio != float("inf") else "infinite"
            extremes = f"largest {largest} {counts[largest]}, smallest {smallest} {counts[smallest]}"
            print(f"imbalance {ratio} ({extremes})")
    return _check_verdict(report)


def _train(args: argparse.Namespace) -> int:
    from medseg.config import load_config
    from medseg.workflows.train import train

    overrides = list(args.overrides)
    if args.task:
        overrides.append(f"task={args.task}")
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.resume and not args.out:
        raise MedsegError("train --resume: give the run folder to continue with --out RUN")
    config = load_config(args.config, overrides)
    out = args.out or str(Path("runs") / f"{Path(args.dataset or 'dataset').name}_{config.model.name}")
    run = train(
        args.dataset,
        config,
        out,
        resume=args.resume,
        classes=_split_classes(args.classes),
        overrides=overrides,
        device=args.device,
    )
    print(f"run written to {run}\nnext: medseg evaluate {run}   |   medseg predict {run} IMAGES --out DIR")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medseg.workflows.evaluate import evaluate

    summary = evaluate(args.run, args.dataset, split=args.split, spacing=args.spacing, device=args.device)
    if summary.get("task") == "classify":
        _print_classification_summary(summary)
        print(f"written to {Path(args.run) / 'eval'}")
        return 0
    if summary.get("task") == "instance":
        _print_instance_summary(summary)
        print(f"written to {Path(args.run) / 'eval'}")
        return 0
    names = list(summary["per_class"])
    print(f"{summary['num_images']} images ({summary['split']}) from {summary['dataset']}")
    print(f"{'class':<16} {'dice':>7} {'iou':>7} {'sens':>7} {'spec':>7} {'hd95':>8}")
    for name in names[1:]:
        m = summary["per_class"][name]
        print(
            f"{name:<16} {_f(m['dice'])} {_f(m['iou'])} {_f(m['sensitivity'])} {_f(m['specificity'])} "
            f"{_f(m['hd95'], 8, 2)}"
        )
    m = summary["mean"]
    print(
        f"{'mean (fg)':<16} {_f(m['dice'])} {_f(m['iou'])} {_f(m['sensitivity'])} {_f(m['specificity'])} "
        f"{_f(m['hd95'], 8, 2)}"
    )
    print(f"written to {Path(args.run) / 'eval'}")
    return 0


def _print_classification_summary(summary: dict) -> None:
    print(f"{summary['num_images']} images ({summary['split']}) from {summary['dataset']}")
    print(
        f"accuracy {_f(summary['accuracy'], 0)}   balanced accuracy {_f(summary['balanced_accuracy'], 0)}   "
        f"macro F1 {_f(summary['macro_f1'], 0)}   macro AUC {_f(summary['macro_auc'], 0)}   "
        f"ECE {_f(summary['ece'], 0)}"
    )
    names = summary["class_names"]
    width = max(16, *(len(n) + 1 for n in names))
    print(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'auc':>7} {'support':>8}")
    for name in names:
        m = summary["per_class"][name]
        print(
            f"{name:<{width}} {_f(m['precision'], 9)} {_f(m['recall'])} {_f(m['f1'])} {_f(m['auc'])} "
            f"{m['support']:>8}"
        )
    print("confusion matrix (rows: true, columns: predicted)")
    cells = max(5, *(len(str(v)) for row in summary["confusion_matrix"] for v in row))
    print(" " * width + " " + " ".join(f"{n[:cells]:>{cells}}" for n in names))
    for name, row in zip(names, summary["confusion_matrix"], strict=True):
        print(f"{name:<{width}} " + " ".join(f"{v:>{cells}}" for v in row))


def _print_instance_summary(summary: dict) -> None:
    pooled = summary["pooled"]
    print(f"{summary['num_images']} images ({summary['split']}) from {summary['dataset']}")
    print(
        f"objects: {pooled['n_true']} true, {pooled['n_pred']} found   F1@0.5 {_f(pooled['f1@0.5'], 0)}   "
        f"precision {_f(pooled['precision@0.5'], 0)}   recall {_f(pooled['recall@0.5'], 0)}"
    )
    print(
        f"PQ {_f(pooled['pq'], 0)} (SQ {_f(pooled['sq'], 0)}, RQ {_f(pooled['rq'], 0)})   "
        f"AJI {_f(pooled['aji'], 0)}   AJI+ {_f(pooled['aji_plus'], 0)}   AP(DSB) {_f(pooled['ap_dsb'], 0)}"
    )
    errors = ", ".join(f"{pooled[k]} {k}" for k in ("split", "merge", "catastrophe", "missed", "gained"))
    print(f"object errors: {errors}")
    print(
        f"count exact in {summary['count_exact_fraction']:.0%} of images, mean |error| "
        f"{summary['mean_absolute_count_error']:.2f} objects"
    )
    if "type_accuracy" in summary:
        line = f"type accuracy {_f(summary['type_accuracy'], 0)}"
        if "differential_count_exact_fraction" in summary:
            exact = summary["differential_count_exact_fraction"]
            line += f" (differential types {_f(summary['differential_type_accuracy'], 0)})"
            line += f"   differential count exact in {exact:.0%} of images"
        print(line)


def _f(value: float | None, width: int = 7, digits: int = 3) -> str:
    if value is None or value != value:
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def _track(args: argparse.Namespace) -> int:
    from medseg.workflows.track import parse_params, print_scores, track

    inputs = list(args.inputs)
    if args.masks:
        if len(inputs) > 1:
            raise MedsegError("track --masks MASKS [FRAMES]: give at most the movie besides --masks, no run")
        run, frames = None, (inputs[0] if inputs else None)
    else:
        if len(inputs) != 2:
            raise MedsegError("track: expected RUN FRAMES (an instance run and the movie), or --masks MASKS")
        run, frames = inputs
    summary = track(
        args.out,
        run=run,
        frames=frames,
        masks=args.masks,
        params=parse_params(args.overrides),
        gt=args.gt,
        device=args.device,
        backend=args.backend,
    )
    print(
        f"{summary['tracks']} tracks, {summary['divisions']} divisions over {summary['frames']} frames "
        f"({summary['objects_per_frame']:.1f} objects per frame) written to {args.out}"
    )
    if "metrics" in summary:
        print_scores(summary["metrics"])
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _evaluate_tracking(args: argparse.Namespace) -> int:
    from medseg.workflows.track import evaluate_tracking, print_scores

    metrics = evaluate_tracking(args.result, args.gt, division_tolerance=args.division_tolerance)
    print_scores(metrics)
    print(f"scores written to {Path(args.result) / 'metrics.json'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medseg.workflows.classify import is_classification_run
    from medseg.workflows.predict import predict

    overrides = list(args.overrides)
    for text in overrides:
        if not text.startswith("inference."):
            raise MedsegError(
                f"predict --set {text!r}: only inference.* settings can change at prediction time"
            )
    if args.tta:
        overrides.append("inference.tta=true")
    if args.tile is not None:
        overrides.append(f"inference.tile={args.tile}")
    if args.tiles is not None:
        return _predict_tiles(args, overrides)
    if is_classification_run(args.run):
        from medseg.workflows.classify import predict_classifier

        if args.backend != "torch":
            raise MedsegError(f"predict --backend {args.backend}: classification runs predict with torch")
        path = predict_classifier(
            args.run, args.inputs, args.out, device=args.device, overrides=overrides, explain=args.explain
        )
        print(f"{path.name}{' and heatmaps' if args.explain else ''} written to {args.out}")
        return 0
    if args.explain:
        raise MedsegError(
            f"predict --explain: {args.run} is a segmentation run; use `medseg explain RUN IMAGE --class C`"
        )
    summary = predict(
        args.run,
        args.inputs,
        args.out,
        mask_format=args.format,
        device=args.device,
        overrides=overrides,
        backend=args.backend,
    )
    print(f"masks, overlays and {summary.name} written to {args.out}")
    return 0


def _tile_size(text: str) -> int:
    """``--tiles SIZE``: a whole number of pixels >= 1."""
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"tile size {text!r} is not a whole number of pixels >= 1")
    return size


def _predict_tiles(args: argparse.Namespace, overrides: list[str]) -> int:
    """``predict --tiles``: per-tile classification of each image by a classification run."""
    from medseg.workflows.classify import is_classification_run

    if not is_classification_run(args.run):
        if not (Path(args.run) / "config.yaml").is_file():
            from medseg.inference.predictor import load_run_config

            load_run_config(args.run)  # the one-line "not a run" error
        raise MedsegError(
            f"predict --tiles: {args.run} is a segmentation run; --tiles needs a classification run "
            "(segmentation runs tile large images by themselves: --tile SIZE)"
        )
    if args.explain or args.backend != "torch":
        raise MedsegError("predict --tiles: cannot be combined with --explain or --backend onnxruntime")
    from medseg.workflows.classify_tiles import predict_tile_classes

    path = predict_tile_classes(
        args.run, args.inputs, args.out, tile=args.tiles or None, device=args.device, overrides=overrides
    )
    print(f"{path.name} and per-tile CSVs, class maps and overlays (tiles/) written to {args.out}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from medseg.workflows.explain import explain

    layers = _split_classes(args.layers)
    if layers and not args.feature_maps:
        raise MedsegError("explain --layers: only used with --feature-maps (Grad-CAM takes one --layer)")
    result = explain(
        args.run,
        args.image,
        args.out,
        class_name=args.class_name,
        layer=args.layer,
        method=args.method,
        feature_maps=args.feature_maps,
        layers=layers,
        k=args.k,
        device=args.device,
    )
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    print(result.describe())
    for path in result.files:
        print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import json

    from medseg.workflows.export import export_run

    bundle_path = export_run(args.run, format=args.format, opset=args.opset, out=args.out)
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    model = bundle_path.parent / bundle["model_file"]
    print(
        f"exported {model} ({model.stat().st_size / 1e6:.1f} MB, opset {bundle['opset']}, "
        f"max |onnxruntime - torch| = {bundle['check']['max_abs_difference']:.1e}) and {bundle_path.name}"
    )
    if args.out is None:
        print(f"next: medseg predict {args.run} IMAGES --backend onnxruntime --out DIR")
    return 0


def _report(args: argparse.Namespace) -> int:
    from medseg.report import build_report

    path = build_report(args.run)
    print(f"report written to {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from medseg.web.app import serve
    except ImportError as exc:
        raise MedsegError(
            f"serve needs the web dependencies ({exc.name} is missing): "
            "pip install fastapi uvicorn python-multipart"
        ) from exc
    limits = {"max_pixels": args.max_pixels} if args.max_pixels is not None else {}
    serve(
        args.runs,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        device=args.device,
        backend=args.backend,
        **limits,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
