"""The only place that knows both media and the engine: jobs in, files out.

Import the module you need; this package's own import pulls in nothing (so ``pipeline.pixels``
can be used by the Python API and ``bench`` without loading the video machinery):

- ``loading``: a model card -> a network -> an Engine, or one engine per device (EnginePool);
- ``pixels``: numpy pixels (8/16-bit, gray, alpha) <-> the engine's tensors;
- ``jobs``: inputs (files, folders, globs) -> jobs with their output paths;
- ``images``: one image job; ``video``: one video job (threads, segments, resume);
- ``run``: every job of a run, failures recorded, the rest going on;
- ``cluster``: the same jobs on a Ray cluster (``--cluster``; Ray imported only there);
- ``evaluation``: PSNR/SSIM-Y on benchmark folders; ``bench``: speed of one engine;
- ``compare``: one image through bicubic and several models (timed, scored, cropped);
  ``compare_output``: the grid picture and slider page it writes.
"""
