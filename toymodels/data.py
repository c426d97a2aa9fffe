"""Synthetic-domain clips for the toy video models (uses :mod:`avlab.synthetic`)."""

from __future__ import annotations

import torch


def synthetic_clips(n: int, frames: int = 16, size: int = 32, seed: int = 0):
    """``n`` synthetic scenes → (frames ``[n,T,H,W,3]`` 0..1, class ids ``[n]``)."""
    raise NotImplementedError("waiting for avlab.synthetic")
