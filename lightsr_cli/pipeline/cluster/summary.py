"""What a cluster run reports: the workers' engine facts (as a pool's) and each node's share of the work."""

from __future__ import annotations

from dataclasses import dataclass

from .units import SegmentUnit, UnitOutcome, WorkerFacts


def precisions_of(facts: list[WorkerFacts]) -> str:
    """Every precision the workers compute in, e.g. 'bf16', or 'bf16+fp32' where ``--precision auto`` resolved
    differently on nodes whose CPUs differ (bf16 where the CPU has bf16 dot products, fp32 elsewhere). The
    summary says it, and the resume plan records it, the same whichever worker is asked first."""
    return "+".join(sorted({fact.precision for fact in facts}))


@dataclass(frozen=True)
class ClusterEngineFacts:
    """The engine settings every worker runs with, read as the summary reads a local engine's."""

    precision: str
    tile: int | None
    batch: int
    tta: bool
    compiled: bool = False
    backend: str = "torch"

    @property
    def stats(self) -> ClusterEngineFacts:
        return self  # the summary reads engine.stats.tile when no tile was asked for


@dataclass(frozen=True)
class ClusterPool:
    """The cluster's workers, with the attributes the run summary reads from a local EnginePool."""

    primary: ClusterEngineFacts
    device_names: str
    notes: tuple[str, ...]
    fp32_fallbacks: int
    model_id: str

    @staticmethod
    def of(facts: list[WorkerFacts], model_id: str, fp32_fallbacks: int, resent: int) -> ClusterPool:
        first = facts[0]
        nodes = len({f.node_id for f in facts})
        devices = sorted({f.device for f in facts})
        names = f"ray: {len(facts)} worker(s) ({', '.join(devices)}) on {nodes} node(s)"
        engine = ClusterEngineFacts(precisions_of(facts), first.tile, first.batch, first.tta, backend=first.backend)
        return ClusterPool(engine, names, (), fp32_fallbacks, model_id)


class NodeTally:
    """Units, megapixels and busy seconds per node, from every outcome that came back."""

    def __init__(self, facts: list[WorkerFacts]) -> None:
        self._nodes: dict[str, dict] = {}
        for fact in facts:
            node = self._node(fact.node_id, fact.host)
            node["workers"] += 1

    def _node(self, node_id: str, host: str) -> dict:
        return self._nodes.setdefault(node_id, {"node": node_id[:12], "host": host, "workers": 0, "images": 0,
                                                "segments": 0, "frames": 0, "megapixels_out": 0.0,
                                                "busy_seconds": 0.0})

    def add(self, outcome: UnitOutcome, unit) -> None:
        node = self._node(outcome.node_id, outcome.host)
        node["busy_seconds"] += outcome.seconds
        if outcome.failure is not None:
            return
        if isinstance(unit, SegmentUnit):
            node["segments"] += 1
            node["frames"] += len(unit.frames)
        else:
            node["images"] += 1
        node["megapixels_out"] += outcome.megapixels_out

    def as_dict(self, wall_seconds: float, files: str, resent: int) -> dict:
        nodes = []
        for node in self._nodes.values():
            rate = node["megapixels_out"] / wall_seconds if wall_seconds > 0 else None
            nodes.append({**node, "megapixels_out": round(node["megapixels_out"], 6),
                          "busy_seconds": round(node["busy_seconds"], 3),
                          "megapixels_out_per_second": round(rate, 4) if rate is not None else None})
        return {"workers": sum(n["workers"] for n in nodes), "files": files, "resent_units": resent, "nodes": nodes}
