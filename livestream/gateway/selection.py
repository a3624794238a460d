"""Which runner gets a request: go-livepeer's order, with load taken into account.

1. Runners that are up and serve the pipeline (a pinned runner only its own model).
2. Not suspended, unless every candidate is (go-livepeer: an empty pool releases suspensions).
3. At or under the price cap for (pipeline, model), unless none is and
   `ignore_max_price_if_needed` is set.
4. The warm pool (runners that have the model loaded) first, then the cold pool (runners
   that serve the pipeline and will load the model). Once every warm runner has a request in
   flight, the cold ones join the pool, so a burst spreads instead of queueing on one runner.
5. In that pool, a share `random_share` of picks is random; the rest take the lowest score,
   `latency × (1 + requests in flight)`. go-livepeer orders by latency alone, which sends every
   request to one runner until it fails; counting the requests in flight spreads a burst. A
   runner with no latency yet for this model counts as the fastest known, so it gets tried.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from .backends import Backend
from .config import GatewayConfig

__all__ = ["NoBackendError", "Selector"]


class NoBackendError(Exception):
    """No runner can take the request; the message says why."""


class Selector:
    def __init__(self, config: GatewayConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()

    def pool(self, backends: Iterable[Backend], pipeline: str, model_id: str, exclude: Collection[Backend] = ()) -> list[Backend]:
        """The candidates of step 1-4, in no particular order."""
        serving = [b for b in backends if b.serves(pipeline, model_id)]
        if not serving:
            what = f"{pipeline} model {model_id!r}" if model_id else pipeline
            raise NoBackendError(f"no runner available for {what}")
        fresh = [b for b in serving if b not in exclude]
        if not fresh:
            raise NoBackendError(f"every runner for {pipeline} failed this request")
        candidates = [b for b in fresh if not b.suspended] or fresh
        cap = self.config.price_cap(pipeline, model_id)
        if cap is not None:
            under = [b for b in candidates if b.price(pipeline, model_id) <= cap]
            if not under and not self.config.ignore_max_price_if_needed:
                raise NoBackendError(f"no runner for {pipeline} at or under the max price {cap}")
            candidates = under or candidates
        warm = [b for b in candidates if b.is_warm(pipeline, model_id)]
        # Warm first; once every warm runner is busy, the cold ones join (by score).
        return warm if any(b.in_flight == 0 for b in warm) else candidates

    def score(self, backend: Backend, pipeline: str, model_id: str, default: float) -> float:
        stat = backend.latency.get((pipeline, model_id))
        latency = stat.seconds if stat is not None and stat.samples else default
        return latency * (1 + backend.in_flight)

    def pick(self, backends: Iterable[Backend], pipeline: str, model_id: str, exclude: Collection[Backend] = ()) -> Backend:
        pool = self.pool(backends, pipeline, model_id, exclude)
        if len(pool) == 1:
            return pool[0]
        if self.rng.random() < self.config.random_share:
            return self.rng.choice(pool)
        known = [s.seconds for b in pool if (s := b.latency.get((pipeline, model_id))) is not None and s.samples]
        default = min(known) if known else 1.0
        self.rng.shuffle(pool)  # ties go to a random one
        return min(pool, key=lambda b: self.score(b, pipeline, model_id, default))
