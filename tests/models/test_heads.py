"""Head layouts: channel groups of one output tensor, activated per head."""

from __future__ import annotations

import numpy as np
import torch

from medseg.config import load_config
from medseg.models.heads import HeadLayout


def test_semantic_layout_is_one_softmax_over_the_classes():
    config = load_config(None, ["task=semantic"])
    config.data.labels = {"background": 0, "a": 1, "b": 2}
    layout = HeadLayout.for_config(config)
    assert layout.channels == 3
    logits = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(layout.activate(logits), torch.softmax(logits, dim=1))


def test_instance_layout_with_boundary_and_types():
    config = load_config(None, ["task=instance", "instance.boundary=true", "instance.classes=[a,b,c,d]"])
    layout = HeadLayout.for_config(config)
    assert layout.heads == (("inner", 1), ("outer", 1), ("fgbg", 3), ("classes", 4))
    assert layout.channels == 9
    assert layout.slices()["classes"] == slice(5, 9)
    logits = torch.randn(2, 9, 4, 6) * 5
    maps = layout.activate(logits)
    torch.testing.assert_close(maps[:, 0], torch.sigmoid(logits[:, 0]))
    torch.testing.assert_close(maps[:, 2:5].sum(1), torch.ones(2, 4, 6))
    torch.testing.assert_close(maps[:, 5:9], torch.softmax(logits[:, 5:9], dim=1))
    heads = layout.split(maps[0].numpy())
    assert heads["inner"].shape == (4, 6) and heads["fgbg"].shape == (3, 4, 6)
    assert heads["classes"].shape == (4, 4, 6)
    np.testing.assert_array_equal(heads["outer"], maps[0, 1].numpy())


def test_untyped_instance_layout_has_no_class_head():
    layout = HeadLayout.for_config(load_config(None, ["task=instance"]))
    assert [name for name, _ in layout.heads] == ["inner", "outer", "fgbg"] and layout.channels == 4
