"""``--dist load`` for workers of different widths: a multi-GPU test goes only to a worker holding enough."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScheduling

NEEDS_PREFIX = "needs-"


def write_needs(folder: str, worker: str, needs: Mapping[str, int]) -> None:
    """On a worker, after collection: the GPU count of every item that asks for GPUs, by node id."""
    path = Path(folder) / f"{NEEDS_PREFIX}{worker}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(needs)), encoding="utf-8")
    tmp.replace(path)  # the controller never reads half a file


def read_needs(folder: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in sorted(Path(folder).glob(f"{NEEDS_PREFIX}*.json")):
        found.update({str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()})
    return found


def fits(need: int, size: int, widest: int) -> bool:
    """A test may go to a worker holding ``size`` GPUs: it needs no more, or no worker holds enough
    (then any worker takes it, and skips it with the reason)."""
    return need <= size or need > widest


class GpuLoadScheduling(LoadScheduling):  # type: ignore[misc]
    """xdist's load scheduling, except that each test goes only to a worker whose GPU slice is wide
    enough, and wide workers take the tests only they can run first. Workers that can take nothing
    more are shut down so the run ends."""

    def __init__(self, config: pytest.Config, log: Any, folder: str, sizes: Mapping[str, int],
                 auto_devices: int | None = None) -> None:
        super().__init__(config, log)
        self.folder = folder
        self.sizes = dict(sizes)  # worker id -> GPUs it holds
        self.widest = max(self.sizes.values(), default=0)
        self.narrowest = min(self.sizes.values(), default=0)
        self.needs: dict[str, int] = {}
        # --lm-gpus-per-worker=auto: the GPUs the workers slice, once the needs say how wide
        self.auto_devices = auto_devices
        self.width = 0

    def _size(self, node: Any) -> int:
        """GPUs the worker holds: from its own share (a worker xdist started in place of a crashed one
        has a new id but the crashed one's share), else by id."""
        from pytest_lmbackend.xdist import WORKERINPUT_KEY

        share = (getattr(node, "workerinput", None) or {}).get(WORKERINPUT_KEY)
        if self.auto_devices is not None:  # the same rule the worker pinned itself by (auto_slice)
            rank = share.get("rank") if isinstance(share, dict) else None
            fits = self.auto_devices // self.width if self.width else 0
            return self.width if isinstance(rank, int) and rank < fits else 0
        size = share.get("size") if isinstance(share, dict) else None
        if isinstance(size, int) and not isinstance(size, bool):
            return size
        return self.sizes.get(str(node.gateway.id), self.widest)

    def _need(self, index: int) -> int:
        assert self.collection is not None
        return self.needs.get(self.collection[index], 0)

    def _fitting(self, node: Any) -> list[int]:
        size = self._size(node)
        chosen = [i for i in self.pending if fits(self._need(i), size, self.widest)]
        if size > self.narrowest:
            # what only wide workers can run goes first, so it does not wait behind narrow tests
            chosen.sort(key=lambda i: 0 if self.narrowest < self._need(i) <= size else 1)
        return chosen

    def schedule(self) -> None:
        if self.collection is None:
            self.needs = read_needs(self.folder)
            if self.auto_devices:
                self.width = max(1, min(max(self.needs.values(), default=0), self.auto_devices))
                sizes = [self._size(node) for node in self.nodes]
                self.widest, self.narrowest = max(sizes, default=0), min(sizes, default=0)
        super().schedule()
        for node in self.nodes:  # a worker that got nothing must still hear that there is nothing
            self.check_schedule(node)

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if self.pending and not self._fitting(node):
            node.shutdown()  # what is left needs more GPUs than it holds: it would idle forever
            return
        super().check_schedule(node, duration)

    def mark_test_complete(self, node: Any, item_index: int | str, duration: float = 0) -> None:
        super().mark_test_complete(node, item_index, duration)
        for other in self.nodes:  # another worker may now be the only one left for what is pending
            if other is not node:
                self.check_schedule(other)

    def _send_tests(self, node: Any, num: int) -> None:
        chosen = self._fitting(node)[:num]
        if chosen:
            taken = set(chosen)
            self.pending[:] = [i for i in self.pending if i not in taken]
            self.node2pending[node].extend(chosen)
            node.send_runtest_some(chosen)

