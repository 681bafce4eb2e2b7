"""Run the jobs of `lightsr upscale` on a Ray cluster (`--cluster`): the same jobs, outputs and summary.

Ray is optional (``pip install 'lightsr[ray]'``) and imported only when a cluster run starts.
Modules: :mod:`.units` (the values that travel between driver and workers), :mod:`.connect`
(joining the cluster, placing one worker per GPU or per N CPUs), :mod:`.worker` (the actor that
keeps the network loaded and runs one image or one video segment), :mod:`.driver` (the scheduler:
backpressure, retries of lost units, writing targets, joining segments, the summary).
"""

from __future__ import annotations

from .units import ClusterSettings, FileAccess

__all__ = ["ClusterSettings", "FileAccess", "run_jobs_on_cluster"]


def run_jobs_on_cluster(*args, **kwargs):
    """See :func:`lightsr_cli.pipeline.cluster.driver.run_jobs_on_cluster` (imported lazily: it needs Ray)."""
    from .driver import run_jobs_on_cluster as run

    return run(*args, **kwargs)
