"""2.5-D input (issue 25): each slice with its ``k`` neighbours on either side as extra channels.

A volume of slices ``(S, C, H, W)`` (C sequences) becomes, for slice ``s``, an input of
``C · (2k + 1)`` channels ordered sequence by sequence: for sequence ``c`` the slices
``s - k, ..., s, ..., s + k`` (channel ``c · (2k + 1) + j`` holds slice ``s - k + j``). At the
first and last slices the missing neighbours repeat the edge slice (index clipped to
``[0, S - 1]``), as a replicate pad would. ``k = 0`` is the paper's 2-D input, unchanged.
"""
from __future__ import annotations

import numpy as np


def context_indices(n_slices: int, idx, k: int) -> np.ndarray:
    """(len(idx), 2k + 1) slice indices: each of ``idx`` with its ``k`` neighbours, edges repeated."""
    idx = np.asarray(idx, dtype=int).reshape(-1, 1)
    return np.clip(idx + np.arange(-k, k + 1)[None, :], 0, n_slices - 1)


def stack_context(volume: np.ndarray, idx, k: int) -> np.ndarray:
    """Inputs (len(idx), C · (2k + 1), H, W) float32 for slices ``idx`` of ``volume`` (S, C, H, W)."""
    if k == 0:
        return np.asarray(volume[np.asarray(idx, dtype=int)], dtype=np.float32)
    ci = context_indices(volume.shape[0], idx, k)  # (N, 2k + 1)
    flat = np.unique(ci)
    block = np.asarray(volume[flat], dtype=np.float32)  # one read of every slice involved (memmap friendly)
    pos = np.searchsorted(flat, ci)  # (N, 2k + 1) rows of block
    out = block[pos]  # (N, 2k + 1, C, H, W)
    n, w, c, h, wd = out.shape
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3, 4).reshape(n, c * w, h, wd))


def input_channels(n_sequences: int, k: int) -> int:
    """Network input channels for ``n_sequences`` sequences with ``k`` context slices per side."""
    return int(n_sequences) * (2 * int(k) + 1)


__all__ = ["context_indices", "stack_context", "input_channels"]
