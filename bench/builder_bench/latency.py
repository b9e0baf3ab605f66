"""When an item was stamped, and how long its copies took to arrive: latency histograms."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from appforge.api.flow.v1 import flow_pb2

BIN_US = 10  # latency histogram resolution


def now_us() -> int:
    return time.time_ns() // 1000


def stamp_us(item: flow_pb2.FlowItem) -> int:
    ts = item.timestamp
    return ts.seconds * 1_000_000 + ts.nanos // 1000


class Histogram:
    """Durations in BIN_US-wide bins: mergeable across processes, percentiles per bin."""

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.count = 0
        self.max_us = 0

    def add(self, us: int) -> None:
        us = max(0, us)
        self.bins[us // BIN_US] += 1
        self.count += 1
        self.max_us = max(self.max_us, us)

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(k): v for k, v in self.bins.items()}, "max_us": self.max_us}

    def merge_json(self, data: dict[str, Any]) -> None:
        for key, value in data["bins"].items():
            self.bins[int(key)] += int(value)
            self.count += int(value)
        self.max_us = max(self.max_us, int(data["max_us"]))

    def percentile_ms(self, fraction: float) -> float:
        """The nearest-rank percentile, as the upper edge of its bin (never optimistic)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return min((key + 1) * BIN_US, self.max_us) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": self.percentile_ms(0.50),
            "p90_ms": self.percentile_ms(0.90),
            "p99_ms": self.percentile_ms(0.99),
            "p999_ms": self.percentile_ms(0.999),
            "max_ms": self.max_us / 1000,
        }
