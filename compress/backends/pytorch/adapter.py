"""PyTorch files as artifacts (`compress prune`/`distill` write a ``.pt2``): verified and timed in eager torch.

Example:
    >>> from compress.backends import format_of
    >>> format_of("model.pt2").name, format_of("model.pt").name
    ('pt2', 'torchscript')
"""
from __future__ import annotations

from compress.backends.registry import ArtifactFormat

PT2 = ArtifactFormat("pt2", (".pt2",), ("torch",))
TORCHSCRIPT = ArtifactFormat("torchscript", (".pt",), ("torch",))
