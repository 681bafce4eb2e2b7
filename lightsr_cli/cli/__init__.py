"""The thin command-line layer: parse, resolve, call the pipeline once, render with rich.

Nothing here imports torch at module level: `lightsr --help` stays fast.
"""

from .app import app, main

__all__ = ["app", "main"]
