"""GPU gauges through NVML: ``infer_gpu_utilization_ratio{gpu}`` and ``infer_gpu_memory_used_bytes{gpu}``.

NVML comes from the optional ``nvidia-ml-py`` package (module ``pynvml``, in the ``gpu`` extra), imported on the
first scrape and never again. Without the package, without a driver or without a device the gauges are simply
left out: a scrape never raises, and a failed ``nvmlInit`` is retried at most once a minute, not per scrape.
The figures are the whole device's (every process on it), as ``nvidia-smi`` shows them.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["RETRY_S", "GpuProbe", "gpu_families"]

log = logging.getLogger(__name__)

RETRY_S = 60.0  # a failed NVML start is tried again after this long


class GpuProbe:
    """Reads every NVML device at scrape time; one per process (:func:`gpu_families`), or one per test."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, module: str = "pynvml") -> None:
        self._clock = clock
        self._module = module
        self._nvml: Any = None  # the module, once imported
        self._ready = False  # nvmlInit succeeded
        self._next_try = 0.0  # no start before this (inf: the package is not installed, never tried again)

    def _start(self) -> bool:
        if self._ready:
            return True
        if self._clock() < self._next_try:
            return False
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module(self._module)
            except ImportError:
                self._next_try = math.inf
                return False
        try:
            self._nvml.nvmlInit()
        except Exception as e:  # no driver, no device, a container without the library
            self._next_try = self._clock() + RETRY_S
            log.debug("NVML unavailable (%s); GPU gauges left out", e)
            return False
        self._ready = True
        return True

    def _lost(self, error: Exception) -> None:
        """A query failed after a good start (driver reset, device gone): start again later."""
        log.debug("NVML query failed (%s); retrying in %.0f s", error, RETRY_S)
        self._ready = False
        self._next_try = self._clock() + RETRY_S
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # already down
            pass

    def read(self) -> list[tuple[str, float, float]]:
        """``(gpu index, utilization 0..1, memory used bytes)`` per device; ``[]`` when NVML is not there."""
        if not self._start():
            return []
        nvml = self._nvml
        rows = []
        try:
            for i in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                rows.append((str(i), float(util.gpu) / 100.0, float(mem.used)))
        except Exception as e:
            self._lost(e)
            return []
        return rows

    def families(self) -> Iterator[Metric]:
        rows = self.read()
        if not rows:
            return
        util = GaugeMetricFamily("infer_gpu_utilization_ratio",
                                 "Share of the last sample period in which a kernel ran on the GPU (0..1).",
                                 labels=["gpu"])
        used = GaugeMetricFamily("infer_gpu_memory_used_bytes", "GPU memory in use by all processes.",
                                 labels=["gpu"])
        for gpu, ratio, used_bytes in rows:
            util.add_metric([gpu], ratio)
            used.add_metric([gpu], used_bytes)
        yield util
        yield used


_PROBE = GpuProbe()


def gpu_families() -> Iterator[Metric]:
    """The process-wide probe's families (nothing without NVML or a GPU)."""
    return _PROBE.families()
