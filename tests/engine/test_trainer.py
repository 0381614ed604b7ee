import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import tiny_config

from medseg.engine.callbacks import CSVLogger, EarlyStopping
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.trainer import Callback, Trainer
from medseg.errors import RunError
from medseg.workflows.train import train


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer):
        self.events.append("epoch_start")

    def on_step_end(self, trainer, loss):
        self.events.append("step")

    def on_epoch_end(self, trainer, logs):
        self.events.append("epoch_end")

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


def _toy_trainer(callbacks=(), epochs=2, validate=None, max_steps=0):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.randn(4, 1, 8, 8)
    y = (x[:, 0] > 0).long()
    loader = [(x[:2], y[:2]), (x[2:], y[2:])]
    return Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        loader,
        loss_fn=torch.nn.functional.cross_entropy,
        validate=validate,
        epochs=epochs,
        max_steps=max_steps,
        callbacks=callbacks,
    )


def test_two_epochs_two_steps_call_hooks_in_order_and_learn():
    rec = Recorder()
    trainer = _toy_trainer([rec])
    state = trainer.fit()
    assert rec.events == [
        "fit_start",
        "epoch_start",
        "step",
        "step",
        "epoch_end",
        "epoch_start",
        "step",
        "step",
        "epoch_end",
        "fit_end",
    ]
    assert state.epoch == 2 and state.global_step == 4
    assert state.history[1]["train_loss"] < state.history[0]["train_loss"]


def test_step_budget_stops_mid_epoch():
    trainer = _toy_trainer(epochs=10, max_steps=3)
    state = trainer.fit()
    assert state.global_step == 3 and state.epoch == 2


def test_early_stopping_uses_best_epoch():
    scores = iter([0.5, 0.6, 0.55, 0.4, 0.3, 0.2])
    trainer = _toy_trainer([EarlyStopping(2)], epochs=6, validate=lambda t: {"val_dice": next(scores)})
    state = trainer.fit()
    assert state.best_epoch == 2 and state.epoch == 4 and state.stopped_early


def test_csv_logger_writes_one_row_per_epoch(tmp_path: Path):
    trainer = _toy_trainer([CSVLogger(tmp_path / "metrics.csv")], validate=lambda t: {"val_dice": 0.5})
    trainer.fit()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_dice", "lr", "seconds"} <= set(rows[0])


def test_nan_loss_is_reported():
    trainer = _toy_trainer()
    trainer.loss_fn = lambda out, y: out.sum() * float("nan")
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        trainer.fit()


def test_checkpoint_round_trip_and_bad_files(tmp_path: Path):
    save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert load_checkpoint(tmp_path / "a.pt")["epoch"] == 3
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="bad.pt: cannot load checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="not a medseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(
    blood_dataset: Path, tmp_path: Path, monkeypatch
):
    config = tiny_config("train.epochs=3", "data.samples_per_epoch=8")
    full = train(blood_dataset, config, tmp_path / "full")

    original = Trainer.train_one_epoch

    def interrupted(self):
        if self.state.epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third epoch
        return original(self)

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(blood_dataset, config, tmp_path / "resumed")
    assert len(_rows(tmp_path / "resumed")) == 2
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    resumed = train(blood_dataset, config, tmp_path / "resumed", resume=True)
    ignore = {"seconds"}
    full_rows, resumed_rows = _rows(full), _rows(resumed)
    assert len(full_rows) == len(resumed_rows) == 3
    for a, b in zip(full_rows, resumed_rows):
        for key in a.keys() - ignore:
            assert a[key] == b[key], (key, a, b)
    w_full = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    w_resumed = load_checkpoint(resumed / "checkpoints" / "last.pt")["model"]
    for key in w_full:
        np.testing.assert_array_equal(w_full[key].numpy(), w_resumed[key].numpy())


def test_resume_errors(blood_dataset: Path, tmp_path: Path):
    with pytest.raises(RunError, match="not a medseg run"):
        train(blood_dataset, tiny_config(), tmp_path / "nothing", resume=True)
    run = train(blood_dataset, tiny_config("train.epochs=1"), tmp_path / "r")
    with pytest.raises(RunError, match="already holds a trained run"):
        train(blood_dataset, tiny_config(), run)
    (run / "checkpoints" / "last.pt").unlink()
    with pytest.raises(RunError, match="no checkpoint"):
        train(blood_dataset, tiny_config(), run, resume=True)
