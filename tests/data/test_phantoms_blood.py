"""Tests for the synthetic stained blood smear phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import disk

from medseg.data.phantoms import (
    BLOOD_COLORS,
    BLOOD_LABELS,
    WBC_TYPES,
    BloodSmear,
    blood_smear,
    write_blood_dataset,
)
from medseg.errors import MedsegError
from medseg.io import read_image, read_label

RED, CYTOPLASM, NUCLEUS = BLOOD_LABELS["red_cell"], BLOOD_LABELS["wbc_cytoplasm"], BLOOD_LABELS["wbc_nucleus"]


@pytest.fixture(scope="module")
def smears() -> list[BloodSmear]:
    """Default smears (random types and counts) at two sizes."""
    return [blood_smear(size, seed) for seed in range(4) for size in (96, 160)]


@pytest.fixture(scope="module")
def white_cells() -> dict[str, list[tuple[BloodSmear, np.ndarray]]]:
    """type -> (smear, cell mask) for white cells that do not touch the image border, ~8 per type."""
    cells: dict[str, list[tuple[BloodSmear, np.ndarray]]] = {t: [] for t in WBC_TYPES}
    for kind in WBC_TYPES:
        for seed in range(5):
            smear = blood_smear(128, np.random.default_rng([seed, 7]), wbc_types=[kind, kind])
            for cell_id, cell_kind in smear.cell_types.items():
                mask = smear.instances == cell_id
                inner = mask[1:-1, 1:-1].sum() == mask.sum()
                if cell_kind == kind and inner:
                    cells[kind].append((smear, mask))
    assert all(len(v) >= 5 for v in cells.values()), {k: len(v) for k, v in cells.items()}
    return cells


def test_shapes_dtypes_and_label_values(smears: list[BloodSmear]) -> None:
    for smear in smears:
        size = smear.semantic.shape[0]
        assert smear.image.shape == (size, size, 3) and smear.image.dtype == np.uint8
        assert smear.semantic.shape == (size, size) and smear.semantic.dtype == np.uint8
        assert smear.instances.shape == (size, size) and smear.instances.dtype == np.int32
        assert set(np.unique(smear.semantic)) <= set(BLOOD_LABELS.values())
        assert {RED, CYTOPLASM, NUCLEUS} <= set(np.unique(smear.semantic))  # 1-3 white cells by default


def test_cell_types_match_instance_ids(smears: list[BloodSmear]) -> None:
    for smear in smears:
        ids = set(np.unique(smear.instances).tolist()) - {0}
        assert set(smear.cell_types) == ids == set(range(1, len(ids) + 1))
        assert set(smear.cell_types.values()) <= {"red_cell", *WBC_TYPES}
        assert 1 <= sum(v != "red_cell" for v in smear.cell_types.values()) <= 3


def test_semantic_agrees_with_instances(smears: list[BloodSmear]) -> None:
    for smear in smears:
        lookup = np.zeros(smear.instances.max() + 1, np.uint8)  # 0: background, 1: red, 2: white
        for cell_id, kind in smear.cell_types.items():
            lookup[cell_id] = 1 if kind == "red_cell" else 2
        owner = lookup[smear.instances]
        np.testing.assert_array_equal(smear.semantic == 0, owner == 0)
        np.testing.assert_array_equal(smear.semantic == RED, owner == 1)
        np.testing.assert_array_equal(np.isin(smear.semantic, [CYTOPLASM, NUCLEUS]), owner == 2)


def test_every_white_cell_has_a_nucleus_wrapped_in_cytoplasm(smears: list[BloodSmear]) -> None:
    for smear in smears:
        for cell_id, kind in smear.cell_types.items():
            if kind == "red_cell":
                continue
            cell = smear.instances == cell_id
            nucleus = cell & (smear.semantic == NUCLEUS)
            assert nucleus.sum() >= 20 and (cell & (smear.semantic == CYTOPLASM)).sum() >= 20
            ring = ndimage.binary_dilation(nucleus) & ~nucleus
            assert np.all(cell[ring]) and np.all(smear.semantic[ring] == CYTOPLASM)


def test_same_seed_same_smear_and_different_seed_differs() -> None:
    a, b = blood_smear(96, 11), blood_smear(96, np.random.default_rng(11))
    for field in ("image", "semantic", "instances"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.cell_types == b.cell_types
    c = blood_smear(96, 12)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.semantic, c.semantic)


def test_nuclei_are_darker_and_more_purple_than_everything_else(smears: list[BloodSmear]) -> None:
    for smear in smears:
        grey = smear.image.astype(float).mean(axis=2)
        nucleus = smear.semantic == NUCLEUS
        for other in (RED, CYTOPLASM, 0):
            assert grey[nucleus].mean() < grey[smear.semantic == other].mean() - 20
        red, green, blue = (smear.image[nucleus][:, c].astype(float).mean() for c in range(3))
        assert blue > green + 30 and red > green  # purple: blue and red pass, green is absorbed


def test_red_cells_are_pinker_than_background_and_boundaries_align_with_the_image(
    smears: list[BloodSmear],
) -> None:
    for smear in smears:
        green = smear.image[..., 1].astype(float)
        red_cells = smear.semantic == RED
        inner = red_cells & ~ndimage.binary_erosion(red_cells)
        outer = ndimage.binary_dilation(red_cells) & ~red_cells & (smear.semantic == 0)
        # shifting the labels by even ~2 px would mix the two rings and erase this step
        assert green[inner].mean() < green[outer].mean() - 25
        pixels = smear.image[red_cells].astype(float)
        assert pixels[:, 0].mean() > pixels[:, 1].mean() + 40


def test_red_cell_size_is_in_pixels_not_a_fraction_of_the_image() -> None:
    for size in (96, 256):
        smear = blood_smear(size, 3)
        areas = [(smear.instances == i).sum() for i, kind in smear.cell_types.items() if kind == "red_cell"]
        radius = np.sqrt(np.median(areas) / np.pi)  # the median is robust to cut and overlapped cells
        assert 8.0 < radius < 12.5, (size, radius)


def _lobes(nucleus: np.ndarray) -> int:
    """Nucleus pieces that survive an opening by a radius-2 disc: thin chromatin strands break."""
    labels, _ = ndimage.label(ndimage.binary_opening(nucleus, disk(2)))
    return int(np.sum(np.bincount(labels.ravel())[1:] >= 8))


def test_nucleus_shapes_follow_the_cell_type(
    white_cells: dict[str, list[tuple[BloodSmear, np.ndarray]]],
) -> None:
    def nucleus_of(smear: BloodSmear, mask: np.ndarray) -> np.ndarray:
        return mask & (smear.semantic == NUCLEUS)

    assert all(2 <= _lobes(nucleus_of(*cell)) <= 5 for cell in white_cells["neutrophil"])
    assert all(_lobes(nucleus_of(*cell)) == 2 for cell in white_cells["eosinophil"])
    assert all(_lobes(nucleus_of(*cell)) == 1 for cell in white_cells["lymphocyte"] + white_cells["monocyte"])
    # monocytes are not round: their nucleus fills clearly less of its convex hull than a lymphocyte's
    from skimage.measure import regionprops

    def solidity(kind: str) -> float:
        return float(
            np.mean([regionprops(nucleus_of(*c).astype(np.uint8))[0].solidity for c in white_cells[kind]])
        )

    assert solidity("monocyte") < solidity("lymphocyte") - 0.04


def test_cell_and_nucleus_proportions_follow_the_cell_type(
    white_cells: dict[str, list[tuple[BloodSmear, np.ndarray]]],
) -> None:
    def nucleus_fraction(kind: str) -> float:
        return float(np.mean([(s.semantic[m] == NUCLEUS).mean() for s, m in white_cells[kind]]))

    def area(kind: str) -> float:
        return float(np.mean([m.sum() for _, m in white_cells[kind]]))

    assert nucleus_fraction("lymphocyte") > 0.6
    assert nucleus_fraction("lymphocyte") > 1 - nucleus_fraction("monocyte")  # more than monocyte cytoplasm
    assert all(nucleus_fraction(k) < 0.45 for k in ("neutrophil", "monocyte", "eosinophil", "basophil"))
    assert area("monocyte") > area("neutrophil") > area("lymphocyte")


def test_granules_colour_eosinophils_orange_and_basophils_dark(
    white_cells: dict[str, list[tuple[BloodSmear, np.ndarray]]],
) -> None:
    def cytoplasm_rgb(kind: str) -> np.ndarray:
        return np.mean(
            [s.image[m & (s.semantic == CYTOPLASM)].mean(axis=0) for s, m in white_cells[kind]], axis=0
        )

    eosinophil, neutrophil, basophil = (
        cytoplasm_rgb("eosinophil"),
        cytoplasm_rgb("neutrophil"),
        cytoplasm_rgb("basophil"),
    )
    assert eosinophil[0] - eosinophil[2] > neutrophil[0] - neutrophil[2] + 40  # orange: red high, blue low
    assert basophil.mean() < neutrophil.mean() - 30


def test_white_cell_count_and_types_can_be_chosen() -> None:
    chosen = blood_smear(160, 1, wbc_types=["monocyte", "basophil"])
    assert sorted(v for v in chosen.cell_types.values() if v != "red_cell") == ["basophil", "monocyte"]
    three = blood_smear(160, 2, n_wbc=3, wbc_types=["eosinophil"])
    assert [v for v in three.cell_types.values() if v != "red_cell"] == ["eosinophil"] * 3
    none = blood_smear(96, 3, n_wbc=0)
    assert (
        set(none.cell_types.values()) == {"red_cell"}
        and not np.isin(none.semantic, [CYTOPLASM, NUCLEUS]).any()
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"wbc_types": ["platelet"]}, {"n_wbc": -1}, {"n_wbc": 2, "wbc_types": []}, {"size": 16}],
)
def test_bad_arguments_raise_a_user_error(kwargs: dict) -> None:
    with pytest.raises(MedsegError):
        blood_smear(**{"size": 64, **kwargs})


def test_write_blood_dataset_writes_the_nnunet_layout(tmp_path) -> None:
    out = write_blood_dataset(tmp_path / "blood", 2, size=64, seed=5)
    assert out == tmp_path / "blood"
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["name"] == "blood_phantom" and dataset["numTraining"] == 2
    assert dataset["channel_names"] == {"0": "R", "1": "G", "2": "B"} and dataset["file_ending"] == ".png"
    assert dataset["labels"] == BLOOD_LABELS
    assert dataset["medseg"] == {
        "task": "semantic",
        "colors": {k: list(v) for k, v in BLOOD_COLORS.items()},
        "instances": "instancesTr",
        "instance_classes": ["red_cell", *WBC_TYPES],
        "differential": list(WBC_TYPES),
        "source": "medseg phantom blood --n 2 --size 64 --seed 5",
    }
    for i, case in enumerate(["blood_000", "blood_001"]):
        expected = blood_smear(64, np.random.default_rng([5, i]))
        image = read_image(out / "imagesTr" / f"{case}_0000.png")
        np.testing.assert_array_equal(image, expected.image)
        np.testing.assert_array_equal(read_label(out / "labelsTr" / f"{case}.png"), expected.semantic)
        instances = read_image(out / "instancesTr" / f"{case}.tif")
        assert instances.dtype == np.int32
        np.testing.assert_array_equal(instances, expected.instances)
        sidecar = json.loads((out / "instancesTr" / f"{case}.json").read_text())
        assert {int(k) for k in sidecar} == set(np.unique(instances).tolist()) - {0}
        assert sidecar == {str(k): v for k, v in expected.cell_types.items()}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "blood_000_0000.png",
        "blood_001_0000.png",
    ]


def test_write_blood_dataset_is_byte_identical_and_cases_do_not_depend_on_n(tmp_path) -> None:
    small = write_blood_dataset(tmp_path / "a", 2, size=48, seed=9)
    large = write_blood_dataset(tmp_path / "b", 3, size=48, seed=9)
    for sub, name in [
        ("imagesTr", "blood_001_0000.png"),
        ("labelsTr", "blood_001.png"),
        ("instancesTr", "blood_001.tif"),
    ]:
        assert (small / sub / name).read_bytes() == (large / sub / name).read_bytes()
    other = write_blood_dataset(tmp_path / "c", 1, size=48, seed=10)
    assert (other / "imagesTr" / "blood_000_0000.png").read_bytes() != (
        small / "imagesTr" / "blood_000_0000.png"
    ).read_bytes()


def test_rewriting_with_fewer_cases_removes_the_stale_ones(tmp_path):
    from medseg.data.phantoms import write_blood_dataset

    write_blood_dataset(tmp_path / "d", 4, size=48)
    write_blood_dataset(tmp_path / "d", 2, size=48)
    assert sorted(p.name for p in (tmp_path / "d" / "labelsTr").iterdir()) == [
        "blood_000.png",
        "blood_001.png",
    ]
    assert len(list((tmp_path / "d" / "instancesTr").iterdir())) == 4


def test_refuses_to_write_into_another_dataset(tmp_path):
    import pytest

    from medseg.data.phantoms import write_blood_dataset
    from medseg.errors import MedsegError

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_text('{"name": "my_precious_data"}')
    with pytest.raises(MedsegError, match="holds another dataset"):
        write_blood_dataset(tmp_path / "d", 1, size=48)
