"""The run core: generating answers, detached from HTTP, accountable in every process.

* `job` — what a run needs, prepared by the send (`build_job`);
* `run` — one answer's generation (`Run`), emitting to the outbox;
* `finish` — the one service that ends an answer (runs, stops, sweeper, deletion);
* `sweeper` — ending the answers of processes that died;
* `store` — the core's database statements;
* `process` — `RunManager`, the one object that owns this process's runs (`manager` below).

Dependencies point one way: process → run → finish → store, and all of them →
outbox → (replay buffer, fan-out). Nothing here imports services or views.
"""

from __future__ import annotations

from .. import metrics
from .job import RunJob, build_job
from .process import RunManager
from .run import Run, StopReason

manager = RunManager()
metrics.measure_active_runs(lambda: len(manager.run_ids()))

__all__ = ["Run", "RunJob", "RunManager", "StopReason", "build_job", "manager"]
