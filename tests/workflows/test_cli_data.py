"""`medseg phantom nuclei` and `medseg data import deepcell` through the command line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.io import read_image, read_label


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medseg: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_phantom_nuclei_writes_a_checkable_instance_dataset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "nuclei"
    assert run_cli("phantom", "nuclei", "--out", out, "--n", 2, "--size", 64, "--seed", 4) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote 2 fluorescent nuclei phantoms (64x64, instance labels) to {out}"
    )
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["medseg"] == {"task": "instance", "source": "medseg phantom nuclei --n 2 --size 64 --seed 4"}
    assert read_image(out / "imagesTr" / "nuclei_001_0000.tif").dtype == np.uint16
    assert read_label(out / "labelsTr" / "nuclei_001.tif").max() >= 1
    assert run_cli("data", "check", out) == 0
    assert "no problems found" in capsys.readouterr().out


def test_phantom_nuclei_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    _one_line_error(
        capsys, run_cli("phantom", "nuclei", "--out", tmp_path / "a", "--size", 16), "at least 32"
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset.json").write_text('{"name": "precious"}')
    _one_line_error(capsys, run_cli("phantom", "nuclei", "--out", other, "--n", 1), "holds another dataset")
    with pytest.raises(SystemExit) as usage:  # argparse: a missing --out is a usage error
        run_cli("phantom", "nuclei", "--n", 1)
    assert usage.value.code == 2


def test_data_import_deepcell_prints_a_summary(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 16, 20, 2)).astype(np.float32)
    y = np.zeros((3, 16, 20, 2), np.int32)
    y[:, 2:6, 2:6, 0], y[:, 9:14, 3:9, 0], y[2, 1:4, 12:18, 0] = 1, 2, 5
    y[..., 1] = y[..., 0] > 0
    src = tmp_path / "tissue.npz"
    np.savez_compressed(src, X=x, y=y)
    dst = tmp_path / "ds"
    code = run_cli(
        "data", "import", "deepcell", src, dst, "--y-channel", 0, "--channel-names", "nuclear,membrane"
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"imported 3 cases of 20x16 (WxH) to {dst}: channels nuclear, membrane; "
        "2.3 objects per image on average"
    )
    np.testing.assert_array_equal(read_image(dst / "imagesTr" / "tissue_0002_0001.tif"), x[2, ..., 1])
    np.testing.assert_array_equal(read_label(dst / "labelsTr" / "tissue_0002.tif"), y[2, ..., 0])
    assert run_cli("data", "check", dst) == 0
    capsys.readouterr()

    _one_line_error(capsys, run_cli("data", "import", "deepcell", src, dst), "ds: folder is not empty")
    assert run_cli("data", "import", "deepcell", src, dst, "--overwrite", "--y-channel", 1) == 0
    assert read_label(dst / "labelsTr" / "tissue_0002.tif").max() == 1
    capsys.readouterr()
    _one_line_error(
        capsys,
        run_cli("data", "import", "deepcell", src, tmp_path / "d2", "--y-channel", 2),
        "tissue.npz: y has 2 channel(s); --y-channel 2 does not exist",
    )
    _one_line_error(
        capsys,
        run_cli("data", "import", "deepcell", src, tmp_path / "d2", "--channel-names", "dapi"),
        "X has 2 channel(s) but 1 channel name(s) were given",
    )
    np.savez(tmp_path / "nox.npz", images=x, y=y)
    _one_line_error(
        capsys,
        run_cli("data", "import", "deepcell", tmp_path / "nox.npz", tmp_path / "d2"),
        "missing key 'X'",
    )
    _one_line_error(
        capsys,
        run_cli("data", "import", "deepcell", tmp_path / "none.npz", tmp_path / "d2"),
        "file not found",
    )
    assert not (tmp_path / "d2").exists()
