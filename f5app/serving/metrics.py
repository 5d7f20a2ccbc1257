"""Prometheus text exposition for the few series the server keeps (no client library needed).

If ``prometheus_client`` is installed it is not used either: four series do not need it, and one
format writer keeps the output the same everywhere.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

#: Request latency buckets in seconds: sub-second answers on a GPU to minutes of long text on a CPU.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}" if pairs else ""


class Metrics:
    """Counters and one histogram, safe to update from the event loop and the worker thread."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0, active: Callable[[], int] = lambda: 0,
                 ready: Callable[[], bool] = lambda: False, reference_cache: Callable[[], int] = lambda: 0):
        self._lock = threading.Lock()
        self._requests: dict[tuple[tuple[str, str], ...], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._audio_seconds = 0.0
        self.queue_depth, self.active, self.ready = queue_depth, active, ready
        self.reference_cache = reference_cache

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (("endpoint", endpoint), ("status", str(status)))
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets = self._buckets.setdefault(endpoint, [0] * len(LATENCY_BUCKETS))
            index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
            if index < len(buckets):
                buckets[index] += 1
            self._sums[endpoint] = self._sums.get(endpoint, 0.0) + seconds
            self._counts[endpoint] = self._counts.get(endpoint, 0) + 1

    def add_audio_seconds(self, seconds: float) -> None:
        with self._lock:
            self._audio_seconds += seconds

    def requests(self, endpoint: str, status: int) -> int:
        with self._lock:
            return self._requests.get((("endpoint", endpoint), ("status", str(status))), 0)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP f5app_requests_total HTTP requests answered, by endpoint and status code.",
                     "# TYPE f5app_requests_total counter"]
            lines += [f"f5app_requests_total{_labels(key)} {count}" for key, count in sorted(self._requests.items())]
            lines += ["# HELP f5app_request_duration_seconds Time from request to the last byte of the answer.",
                      "# TYPE f5app_request_duration_seconds histogram"]
            for endpoint, buckets in sorted(self._buckets.items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS, buckets):
                    cumulative += count
                    lines.append(f"f5app_request_duration_seconds_bucket{_labels((('endpoint', endpoint), ('le', repr(bound))))} {cumulative}")
                label = _labels((("endpoint", endpoint), ("le", "+Inf")))
                lines.append(f"f5app_request_duration_seconds_bucket{label} {self._counts[endpoint]}")
                lines.append(f"f5app_request_duration_seconds_sum{_labels((('endpoint', endpoint),))} {self._sums[endpoint]!r}")
                lines.append(f"f5app_request_duration_seconds_count{_labels((('endpoint', endpoint),))} {self._counts[endpoint]}")
            audio = self._audio_seconds
        lines += [
            "# HELP f5app_audio_seconds_total Seconds of speech synthesised.", "# TYPE f5app_audio_seconds_total counter",
            f"f5app_audio_seconds_total {audio!r}",
            "# HELP f5app_queue_depth Requests waiting for the model.", "# TYPE f5app_queue_depth gauge",
            f"f5app_queue_depth {self.queue_depth()}",
            "# HELP f5app_active_requests Requests the model is working on.", "# TYPE f5app_active_requests gauge",
            f"f5app_active_requests {self.active()}",
            "# HELP f5app_model_ready 1 once the model is loaded.", "# TYPE f5app_model_ready gauge",
            f"f5app_model_ready {int(bool(self.ready()))}",
            "# HELP f5app_reference_cache_entries Voice references kept prepared (at most server.reference_cache_size).",
            "# TYPE f5app_reference_cache_entries gauge",
            f"f5app_reference_cache_entries {self.reference_cache()}",
        ]
        return "\n".join(lines) + "\n"
