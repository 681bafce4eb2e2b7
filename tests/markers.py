"""Skip markers shared by several test modules."""

from __future__ import annotations

import shutil

import pytest

needs_c_compiler = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("cc", "gcc", "clang", "g++")),
    reason="torch.compile (inductor) needs a C/C++ compiler on the CPU")
