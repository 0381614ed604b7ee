"""Distributed training and sharded prediction: two gloo processes on 127.0.0.1 against one process.

The ranks are forked from the test process (torch and MONAI already imported, so no start-up cost) with
the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and run the same
``medseg`` command line that ``torchrun -m medseg`` runs. The reference single process is forked too, so
both sides compute with one thread each. One slow test goes through the real ``torchrun``.
"""

from __future__ import annotations

import csv
import faulthandler
import importlib
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.engine.callbacks import FreezeEncoder
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.distributed import RankShard, distributed_session, is_main_process, shard_sampler
from medseg.engine.trainer import Callback, Trainer
from medseg.io import read_image

LAUNCH_TIMEOUT = 120  # seconds; a rank stuck in a collective fails its test instead of hanging the suite
TINY = [
    "--model",
    "unet_tiny",
    "--set",
    "data.patch_size=[48,48]",
    "--set",
    "data.num_workers=0",
    "--set",
    "data.samples_per_epoch=16",
    "--set",
    "train.progress=false",
    "--set",
    "train.amp=off",
]


@pytest.fixture(scope="module", autouse=True)
def _imported_before_forking():
    """Import what the commands use once here, so forked ranks start at once."""
    for name in ("monai.networks.nets", "medseg.inference.predictor", "medseg.workflows.snapshots"):
        importlib.import_module(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank: int, world: int, port: int, target, args) -> None:
    if world > 1:
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    torch.set_num_threads(1)  # the same on both sides of a comparison; keeps forked OpenMP out of play
    faulthandler.dump_traceback_later(LAUNCH_TIMEOUT - 10, exit=True)  # a hung rank shows where, and ends
    sys.exit(target(*args))


def launch(world: int, target, *args) -> list[int | None]:
    """Run ``target(*args)`` in ``world`` forked processes as torchrun would (world 1: a plain process).

    Returns:
        The exit codes in rank order (None for a rank killed after ``LAUNCH_TIMEOUT``).
    """
    context = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [context.Process(target=_as_rank, args=(r, world, port, target, args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(LAUNCH_TIMEOUT)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


def cli(*argv) -> int:
    return main([str(a) for a in argv])


# -- sampling ---------------------------------------------------------------------------------------------


def test_rank_shards_split_every_global_batch_between_the_ranks():
    from medseg.data.samples import EpochSampler

    sampler = EpochSampler(num_cases=10, samples_per_epoch=16, seed=4)
    sampler.set_epoch(3)
    epoch = list(sampler)
    shards = [RankShard(sampler, rank, 2) for rank in range(2)]
    for shard in shards:
        shard.set_epoch(3)
    keys = [list(shard) for shard in shards]
    assert len(shards[0]) == len(keys[0]) == len(keys[1]) == 8
    assert sorted(keys[0] + keys[1]) == sorted(epoch)  # disjoint, and together the whole epoch
    for step in range(4):  # per-rank batch 2 = global batch 4: the same samples, step by step
        together = keys[0][2 * step : 2 * step + 2] + keys[1][2 * step : 2 * step + 2]
        assert sorted(together) == sorted(epoch[4 * step : 4 * step + 4])
    shards[0].set_epoch(4)
    assert list(shards[0]) != keys[0]  # set_epoch reaches the wrapped sampler

    uneven = [list(RankShard(range(10), rank, 4)) for rank in range(4)]
    assert [len(k) for k in uneven] == [3, 3, 3, 3]  # padded so every rank takes the same steps
    assert uneven[0] == [0, 4, 8] and uneven[2] == [2, 6, 0]
    with pytest.raises(ValueError, match="rank 2"):
        RankShard(range(4), 2, 2)


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed_session("cpu") as job:
        assert (job.rank, job.world_size, job.enabled, job.is_main) == (0, 1, False, True)
        assert not torch.distributed.is_initialized()
        assert job.shard(["a", "b", "c"]) == [(0, "a"), (1, "b"), (2, "c")]
        assert job.merge([(1, "b"), (0, "a")]) == ["a", "b"]
        sampler = range(5)
        assert shard_sampler(sampler, job) is sampler
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")  # what a torchrun worker sees before and after its process group
    assert not is_main_process()


# -- the Trainer under DDP --------------------------------------------------------------------------------


class _RankMarker(Callback):
    main_process_only = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer: Trainer) -> None:
        (self.folder / f"marker_rank{trainer.distributed.rank}").touch()


def _toy_fit(out: Path) -> int:
    """Fit a two-conv net with a batch-level loss (batch Dice, class-weighted CE with ignored pixels) on a
    global batch of 4; under 2 ranks each takes 2. Rank 0 saves weights and losses."""
    from medseg.losses import DiceCELoss

    with distributed_session("cpu") as job:
        torch.manual_seed(0)
        first, second = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 3, padding=1)
        model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
        model.__dict__["encoder"] = first  # frozen in epoch 1: DDP is rebuilt when it thaws
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(8, 1, 12, 12, generator=generator)
        labels = torch.randint(0, 3, (8, 12, 12), generator=generator)
        labels[:3, :4] = 9  # ignored, unevenly spread over the samples
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, labels),
            batch_size=4 // job.world_size,
            sampler=shard_sampler(range(8), job),
        )
        loss_fn = DiceCELoss(3, class_weights=[0.2, 1.0, 3.0], ignore_index=9)
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
            loader,
            loss_fn=loss_fn,
            epochs=3,
            grad_clip=0.5,
            callbacks=[FreezeEncoder(1), _RankMarker(out)],
        )
        state = trainer.fit()
        if job.is_main:
            losses = [row["train_loss"] for row in state.history]
            torch.save({"model": model.state_dict(), "losses": losses}, out / f"world{job.world_size}.pt")
    return 0


def test_trainer_under_ddp_takes_the_single_process_steps_of_the_global_batch(tmp_path: Path):
    assert launch(1, _toy_fit, tmp_path) == [0]
    assert launch(2, _toy_fit, tmp_path) == [0, 0]
    one, two = torch.load(tmp_path / "world1.pt"), torch.load(tmp_path / "world2.pt")
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][2] < one["losses"][0]
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-6)
    # a main_process_only callback ran on rank 0 only (and in the single process, whose rank is 0)
    assert sorted(p.name for p in tmp_path.glob("marker_*")) == ["marker_rank0"]


# -- medseg train / predict under the launcher ------------------------------------------------------------


def _interrupted_train(*argv) -> int:
    """The train command, Ctrl-C'd at the start of its third epoch (on every rank, as a signal would)."""
    original = Trainer.train_one_epoch

    def interrupted(self):
        if self.state.epoch == 2:
            raise KeyboardInterrupt
        return original(self)

    Trainer.train_one_epoch = interrupted  # only in this forked process
    code = cli(*argv)
    assert not torch.distributed.is_initialized()  # the session destroyed the group on the way out
    return code


def _recording_predict(folder: Path, *argv) -> int:
    """The predict command, noting in ``folder/read_by_rankN`` which images this rank read."""
    import medseg.workflows.predict as predict_module

    original = predict_module.open_image_lazily
    record = folder / f"read_by_rank{os.environ['RANK']}"

    def recording(path):
        with record.open("a") as f:
            f.write(Path(path).stem + "\n")
        return original(path)

    predict_module.open_image_lazily = recording  # only in this forked process
    return cli(*argv)


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _logits(run: Path, image: np.ndarray) -> np.ndarray:
    from medseg.inference.predictor import Predictor

    predictor = Predictor.from_run(run, checkpoint="last", device="cpu")
    with torch.inference_mode():
        return predictor.logits(torch.from_numpy(predictor.preprocess(image))[None]).numpy()


def test_two_ranks_train_like_one_process_with_the_same_global_batch_and_resume(
    blood_dataset: Path, tmp_path: Path
):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["train", blood_dataset, *TINY, "--epochs", 3]
    assert launch(1, cli, *common, "--set", "train.batch_size=8", "--out", one) == [0]
    # per-rank batch 4 x 2 ranks = the global batch 8; Ctrl-C after 2 epochs, then resume for the third
    assert launch(2, _interrupted_train, *common, "--set", "train.batch_size=4", "--out", two) == [130, 130]
    assert len(_rows(two)) == 2
    assert launch(2, cli, "train", "--resume", "--out", two) == [0, 0]

    rows_one, rows_two = _rows(one), _rows(two)
    assert len(rows_one) == len(rows_two) == 3
    for a, b in zip(rows_one, rows_two):
        for key in ("train_loss", "val_loss", "val_dice", "lr"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), (key, a, b)
    # Weights: a conv bias in front of instance norm gets no real gradient, so Adam turns float noise
    # into steps there; compare what the networks compute instead.
    image = read_image(next((blood_dataset / "imagesTr").iterdir()))
    np.testing.assert_allclose(_logits(two, image), _logits(one, image), rtol=1e-3, atol=1e-3)
    state = load_checkpoint(two / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and state["epoch"] == 3
    assert not any(key.startswith("module.") for key in state["model"])  # the unwrapped model's weights
    snapshots = sorted(p.name for p in (two / "snapshots").iterdir())
    assert snapshots == ["epoch_001.png", "epoch_002.png", "epoch_003.png", "progress.gif"]
    assert '"processes": 2' in (two / "train_summary.json").read_text()
    assert not list(two.rglob(".*.tmp*"))  # no stray temporary files from concurrent writers


def test_sharded_prediction_writes_what_one_process_writes(tmp_path: Path):
    """An instance run (trained by 2 ranks: deep-watershed loss, threshold tuning on rank 0) predicts a
    folder of 5 images and one unreadable file: each rank reads every 2nd file, and the masks, overlays
    and summary/objects/counts CSVs are those of one process; both report the unreadable file."""
    data, run = tmp_path / "nuclei", tmp_path / "run"
    assert cli("phantom", "nuclei", "--out", data, "--n", 8, "--size", 64, "--seed", 1) == 0
    train = ["train", data, *TINY, "--set", "train.batch_size=4", "--epochs", 1, "--out", run]
    assert launch(2, cli, *train) == [0, 0]
    assert (run / "thresholds.json").is_file() and (run / "checkpoints" / "best.pt").is_file()
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((data / "imagesTr").iterdir())[:5]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(b"not an image")
    one, two = tmp_path / "one", tmp_path / "two"
    assert launch(1, cli, "predict", run, folder, "--out", one) == [2]
    assert launch(2, _recording_predict, tmp_path, "predict", run, folder, "--out", two) == [2, 2]

    # in sorted order: broken.png, then nuclei_000_0000 ... nuclei_004_0000
    read = [(tmp_path / f"read_by_rank{rank}").read_text().split() for rank in range(2)]
    assert read == [
        ["broken", "nuclei_001_0000", "nuclei_003_0000"],
        [f"nuclei_00{i}_0000" for i in (0, 2, 4)],
    ]
    for name in ("summary.csv", "objects.csv", "counts.csv"):
        assert (two / name).read_text() == (one / name).read_text(), name
    assert len((two / "summary.csv").read_text().splitlines()) == 1 + 5
    written = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    for name in written:
        if name.startswith(("masks/", "overlays/")):
            np.testing.assert_array_equal(read_image(two / name), read_image(one / name), err_msg=name)


@pytest.mark.slow
def test_real_torchrun_trains_and_predicts(blood_dataset: Path, tmp_path: Path):
    """``python -m torch.distributed.run --nproc_per_node 2 -m medseg ...``: the launcher itself (about a
    minute on two cores, since each rank imports torch and MONAI)."""
    run, out = tmp_path / "run", tmp_path / "pred"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    train = [*launcher, str(_free_port()), "-m", "medseg", "train", str(blood_dataset), *TINY]
    train += ["--set", "train.batch_size=4", "--epochs", "1", "--out", str(run)]
    subprocess.run(train, check=True, env=env, timeout=600)
    assert len(_rows(run)) == 1 and '"processes": 2' in (run / "train_summary.json").read_text()
    predict = [*launcher, str(_free_port()), "-m", "medseg", "predict", str(run)]
    predict += [str(blood_dataset / "imagesTr"), "--out", str(out)]
    subprocess.run(predict, check=True, env=env, timeout=600)
    images = len(list((blood_dataset / "imagesTr").iterdir()))
    assert len(list((out / "masks").iterdir())) == images
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + images
