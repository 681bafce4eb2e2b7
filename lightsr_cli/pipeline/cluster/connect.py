"""Joining the Ray cluster and starting the workers: one per GPU (or per N GPUs), or per N CPUs.

Ray is imported here, lazily, so nothing else of lightsr needs it; without it the user gets one
line saying how to install it. Workers are placed node by node (soft node affinity, so a worker
whose node is lost can be restarted elsewhere) from the resources each live node offers.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

from ...errors import DeviceError, UsageError
from ...registry import ModelCard
from ..images import OutputSettings
from ..loading import EngineSettings
from .units import ClusterSettings, lightsr_version

INSTALL_HINT = "install it with: pip install 'lightsr[ray]'"
MAX_REPLACEMENTS = 8
"""How many workers whose process died are replaced in one run (their units are sent again)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("{--cluster} needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def parse_cluster(text: str) -> str | None:
    """``--cluster`` value -> the address for ray.init: ray -> None, auto -> "auto", ray://HOST:PORT as is."""
    value = text.strip()
    if value == "ray":
        return None
    if value == "auto" or value.startswith("ray://"):
        return value
    raise UsageError(f"{{--cluster {text}}}: expected ray, ray://HOST:PORT or auto",
                     hint="ray starts Ray on this machine; auto joins the cluster RAY_ADDRESS names; "
                          "ray://HOST:10001 connects through Ray Client")


def connect(settings: ClusterSettings):
    """ray.init for the run (quiet: lightsr reports progress itself); returns (the ray module, whether
    this call connected: then the run disconnects at its end)."""
    ray = import_ray()
    if ray.is_initialized():  # a Python caller that connected itself
        return ray, False
    try:
        ray.init(address=settings.address, log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    except ImportError as error:  # Ray Client (ray://) needs grpcio, which plain ray does not install
        raise UsageError(f"{{--cluster {settings.address}}} needs Ray Client: {error}",
                         hint="install it with: pip install 'ray[client]'") from None
    except ConnectionError as error:
        raise UsageError(f"cannot join the Ray cluster: {error}",
                         hint="start it with `ray start --head` (then `ray start --address HEAD:6379` on each "
                              "other node), or set RAY_ADDRESS") from None
    return ray, True


@dataclass(frozen=True)
class Placement:
    """One worker to start: on which node, with which resources and which torch device."""

    node_id: str
    cpus: float
    gpus: float
    device: str


def plan_workers(nodes: list[dict], settings: ClusterSettings, device: str) -> list[Placement]:
    """Workers for the live nodes: per GPU node, GPUs // gpus_per_worker; per CPU node, CPUs // cpus_per_worker."""
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"{{--device {device}}} cannot be used with {{--cluster}}",
                         hint="each worker uses its own GPU ({--gpus-per-worker}); {--device cpu} uses CPU workers only")
    placements: list[Placement] = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if gpus and settings.gpus_per_worker > 0 and device != "cpu":
            count = math.floor(gpus / settings.gpus_per_worker + 1e-9)
            per_cpu = min(1.0, cpus / count) if count else 0.0
            placements += [Placement(node["NodeID"], per_cpu, settings.gpus_per_worker, "cuda")] * count
        elif cpus and device != "cuda":
            per = settings.cpus_per_worker or cpus
            count = math.floor(cpus / per + 1e-9)
            placements += [Placement(node["NodeID"], per, 0.0, "cpu")] * count
    if not placements:
        raise DeviceError(f"no worker fits on the cluster's {len(nodes)} node(s) with these settings",
                          hint="lower {--cpus-per-worker} or {--gpus-per-worker}, or add nodes")
    return placements


class Workers:
    """The run's actors, one per placement; a worker whose process died is replaced by a new one.

    Replacement is the driver's (the actors have no Ray restarts): a new actor on the same node if
    it is still there, else on any node with room (soft affinity), at most ``MAX_REPLACEMENTS``
    times per run, after which the lost worker's share goes to the others.
    """

    def __init__(self, ray, card: ModelCard, engine: EngineSettings, output: OutputSettings, weights: Path,
                 settings: ClusterSettings) -> None:
        from .worker import UpscaleWorker

        self._ray = ray
        self._remote = ray.remote(UpscaleWorker)
        self._args = (card, engine, output, weights.name)
        self._placements = plan_workers(ray.nodes(), settings, engine.device)
        self._weights_ref = ray.put(weights.read_bytes())  # once; every worker reads it from the object store
        self.replaced = 0
        self.actors = [self._start(place) for place in self._placements]
        self.facts = ray.get([actor.facts.remote() for actor in self.actors])
        others = sorted({f.version for f in self.facts if f.version != lightsr_version()})
        if others:
            raise UsageError(f"cluster workers run lightsr {', '.join(others)}, this machine {lightsr_version()}",
                             hint="install the same lightsr version on every node")

    def _start(self, place: Placement):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        card, engine, output, weights_name = self._args
        options = {"num_cpus": place.cpus, "num_gpus": place.gpus, "max_restarts": 0,
                   "scheduling_strategy": NodeAffinitySchedulingStrategy(place.node_id, soft=True)}
        worker_engine = EngineSettings(device=place.device, precision=engine.precision, tile=engine.tile,
                                       batch=engine.batch, tta=engine.tta, compile=engine.compile)
        return self._remote.options(**options).remote(card, worker_engine, [self._weights_ref], weights_name,
                                                      output, max(1, int(place.cpus)))

    def replace(self, index: int, dead) -> bool:
        """Start a new worker in place of ``dead`` (unless done already); False when the replacements are spent."""
        if self.actors[index] is not dead:
            return self.actors[index] is not None  # replaced already after another of its units came back
        if self.replaced >= MAX_REPLACEMENTS:
            self.actors[index] = None
            return False
        self.replaced += 1
        self.actors[index] = self._start(self._placements[index])
        return True

    def kill_all(self) -> None:
        for actor in self.actors:
            if actor is not None:
                with contextlib.suppress(Exception):
                    self._ray.kill(actor, no_restart=True)
