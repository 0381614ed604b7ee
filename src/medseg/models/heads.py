"""Output heads of a task as channel groups of one network output.

A deep-watershed model is any registered backbone built with ``HeadLayout.channels`` output channels; the
layout says which channels are which head. Keeping one output tensor (rather than a module returning a
dict) lets every backbone, the sliding window, TTA and ONNX export work unchanged for every task: the
heads differ only in how their channels are activated, which :meth:`HeadLayout.activate` does.

Heads of the instance task, in channel order:

- ``inner`` (1): inner distance, sigmoid, trained with MSE against targets in ``[0, 1]``;
- ``outer`` (1): outer distance, sigmoid, MSE;
- ``fgbg`` (2, or 3 with a boundary class): softmax, weighted cross-entropy;
- ``classes`` (K, only for typed instances): softmax over instance types, cross-entropy on foreground.

A semantic run has one head, ``classes`` (softmax over K classes), or ``regions`` (R sigmoids) when its
classes overlap (``data.regions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HEAD_ACTIVATIONS = {
    "inner": "sigmoid",
    "outer": "sigmoid",
    "fgbg": "softmax",
    "classes": "softmax",
    "regions": "sigmoid",  # overlapping classes: one independent sigmoid per region
}


@dataclass(frozen=True)
class HeadLayout:
    """Named heads as consecutive channel groups: ``(("inner", 1), ("outer", 1), ("fgbg", 2))``."""

    heads: tuple[tuple[str, int], ...]

    @classmethod
    def for_config(cls, config) -> HeadLayout:
        """The heads a run's config asks for (semantic: one softmax head over its classes, or one sigmoid
        channel per region when ``data.regions`` is set)."""
        if config.task != "instance":
            if config.data.regions:
                return cls((("regions", len(config.data.regions)),))
            return cls((("classes", len(config.data.labels)),))
        inst = config.instance
        heads = [("inner", 1), ("outer", 1), ("fgbg", 3 if inst.boundary else 2)]
        if inst.classes:
            heads.append(("classes", len(inst.classes)))
        return cls(tuple(heads))

    @property
    def channels(self) -> int:
        """Total output channels of the network."""
        return sum(n for _, n in self.heads)

    def slices(self) -> dict[str, slice]:
        """Head name -> channel slice."""
        out, start = {}, 0
        for name, count in self.heads:
            out[name] = slice(start, start + count)
            start += count
        return out

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` raw outputs -> the same shape with each head's activation applied (float32)."""
        logits = logits.float()
        parts = []
        for name, cut in self.slices().items():
            group = logits[:, cut]
            kind = HEAD_ACTIVATIONS[name]
            parts.append(torch.sigmoid(group) if kind == "sigmoid" else torch.softmax(group, dim=1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def split(self, maps):
        """``(C, H, W)`` (or ``(N, C, H, W)``) array or tensor -> head name -> its channels.

        Single-channel heads (distances) lose their channel axis: ``(H, W)``.
        """
        out = {}
        for name, cut in self.slices().items():
            group = maps[..., cut, :, :]
            out[name] = group[..., 0, :, :] if cut.stop - cut.start == 1 else group
        return out
