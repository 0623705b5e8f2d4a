"""Per model-version statistics with Triton's InferStatistics meaning.

Durations are cumulative nanoseconds with a count. ``success`` covers the whole request
(queue + compute); ``queue`` the wait in the scheduler; ``compute_*`` one batch execution,
counted once per request in the batch as Triton does; ``batch`` is keyed by batch size and
counted once per execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BatchStats", "Duration", "VersionStats"]


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class VersionStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    rejected: int = 0
    expired: int = 0
    cancelled: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def record_batch(
        self, size: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One execution of ``size`` samples from ``requests`` requests."""
        b = self.batches.get(size)
        if b is None:
            b = self.batches[size] = BatchStats()
        b.compute_input.add(input_ns)
        b.compute_infer.add(infer_ns)
        b.compute_output.add(output_ns)
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        self.inference_count += size
        self.execution_count += 1
