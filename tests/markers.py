"""Skip markers shared by several test modules."""

from __future__ import annotations

import shutil

import pytest

needs_c_compiler = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("cc", "gcc", "clang", "g++")),
    reason="torch.compile (inductor) needs a C/C++ compiler on the CPU")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# `pytest -m cuda` selects these; without a GPU they skip with the reason.
cuda = [pytest.mark.cuda, pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")]
