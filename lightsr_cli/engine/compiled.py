"""`--compile`: one torch.compile'd network, its graphs counted, compiled one at a time per process.

torch.compile specialises a graph to an input shape (``dynamic=False``: the engine feeds a few
fixed tile and batch shapes, which is where static graphs pay). Three things this wrapper keeps
honest:

- compiling is not thread-safe, and the engines of a multi-GPU pool run in threads: the first call
  of each new shape (the one that compiles) holds a process-wide lock, so engines compile one at a
  time; calls of shapes already compiled run side by side;
- dynamo compiles at most ``recompile_limit`` graphs per function and then silently runs eager:
  shapes past that limit are run eager here, openly (counted and noted), so ``compiled`` never
  claims a graph that is not there;
- graph breaks (code dynamo cannot trace, such as GRL's data-dependent ``torch.nonzero``) are
  counted per new shape, so a summary can say the graph was split.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch
from torch import nn

# torch.compile keeps its caches per process, so the lock that serialises compiling must be too.
_COMPILE_LOCK = threading.Lock()


def recompile_limit() -> int:
    from torch._dynamo import config

    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


class CompiledNetwork:
    """The eager network and its compiled form; ``__call__`` picks which one runs a given input."""

    def __init__(self, eager: nn.Module, compile_fn: Callable[..., Callable] | None = None) -> None:
        self.eager = eager
        self.compiled = (compile_fn or torch.compile)(eager, dynamic=False)
        self.limit = recompile_limit()
        self.shapes: set[tuple] = set()
        """Input shapes (with dtype) that have a compiled graph."""
        self.eager_shapes: set[tuple] = set()
        """Input shapes past the graph limit, run eager."""
        self.graph_breaks = 0
        self.failure: str | None = None
        """Why compiling failed (then everything runs eager), or None."""
        self.last_ran_compiled = True

    def __call__(self, x: torch.Tensor, notes: list[str]) -> torch.Tensor:
        key = (*x.shape, x.dtype)
        if self.failure is None and key in self.shapes:
            self.last_ran_compiled = True
            return self.compiled(x)
        if self.failure is not None or key in self.eager_shapes or len(self.shapes) >= self.limit:
            if self.failure is None and key not in self.eager_shapes:
                self.eager_shapes.add(key)
                notes.append(f"torch.compile: more than {self.limit} input shapes; shape {tuple(x.shape)} "
                             "runs without it (fixed --tile/--batch keep the number of shapes small)")
            self.last_ran_compiled = False
            return self.eager(x)
        with _COMPILE_LOCK:
            breaks_before = _graph_breaks()
            try:
                result = self.compiled(x)
            except Exception as error:  # noqa: BLE001 - a compiler failure must not fail the run
                from .devices import is_out_of_memory

                if is_out_of_memory(error):
                    raise
                self.failure = type(error).__name__
                notes.append(f"torch.compile failed ({self.failure}); running without it")
                self.last_ran_compiled = False
                return self.eager(x)
            new_breaks = _graph_breaks() - breaks_before
        self.shapes.add(key)
        self.last_ran_compiled = True
        if new_breaks:
            self.graph_breaks += new_breaks
            notes.append(f"torch.compile: {new_breaks} graph break(s) for shape {tuple(x.shape)}; "
                         "those parts run eager")
        return result
