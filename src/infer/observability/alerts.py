"""Alerts: anomaly events at or above a severity go to configured sinks over HTTP.

Three kinds of sink share one delivery path: a generic ``webhook`` (the alert as JSON), ``slack`` (an
incoming-webhook message: ``text`` plus Block Kit ``blocks``) and ``pagerduty`` (an Events API v2 ``trigger``).

:meth:`AlertManager.submit` runs on the event loop thread at request rate, so it does only cheap checks, in
this order, per sink: severity filter, de-duplication (one alert per ``dedup_key`` per window; the next one sent
carries the count suppressed meanwhile), a token bucket, and a bounded queue. Whatever fails a check is counted,
never queued without bound. One asyncio task per sink drains its queue with one shared ``aiohttp.ClientSession``,
retrying connection errors, timeouts, 429 (honouring ``Retry-After``) and 5xx with bounded exponential backoff;
nothing it does raises into the caller. :func:`alerts_from_response` turns a batch of anomaly-model outputs into
:class:`Alert` objects, filtering rows with numpy first.

Observability sits beside the layers, so this module imports only ``infer.errors`` from infer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infer.errors import InvalidArgument

__all__ = [
    "PAGERDUTY_EVENTS_URL",
    "SEVERITIES",
    "Alert",
    "AlertManager",
    "AlertsConfig",
    "SinkConfig",
    "SinkStats",
    "alerts_from_response",
    "build_payload",
    "flagged_rows",
]

log = logging.getLogger(__name__)

SEVERITIES: tuple[str, ...] = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_PD_SEVERITY = {"NONE": "info", "LOW": "info", "MEDIUM": "warning", "HIGH": "error", "CRITICAL": "critical"}
_MAX_DEDUP_KEYS = 100_000  # per sink; past it the oldest windows are forgotten first
_USER_AGENT = "infer-alerts/1"


@dataclass(frozen=True, slots=True)
class Alert:
    """One anomaly worth telling someone about; ``details`` must be JSON-able (numpy scalars are converted)."""

    model: str
    version: str
    severity: str
    score: float
    anomaly_type: str
    dedup_key: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
    suppressed: int = 0  # alerts with this dedup_key suppressed since the last one sent (set by the manager)


# --- configuration -------------------------------------------------------------------------------------------------


class SinkConfig(BaseModel):
    """Where one stream of alerts goes, and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Unique sink name, used in stats and logs.")
    kind: Literal["webhook", "slack", "pagerduty"] = Field(
        description="Payload shape: the alert as JSON, a Slack incoming-webhook message, or a PagerDuty v2 event.")
    url: str | None = Field(None, max_length=2048, description=(
        "http(s) URL the alerts are POSTed to; required but for pagerduty, which defaults to the Events API v2."))
    min_severity: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = Field(
        "HIGH", description="Alerts below this severity are not sent to this sink.")
    headers: dict[str, str] = Field(default_factory=dict, max_length=32,
                                    description="Extra HTTP headers sent with every request (e.g. Authorization).")
    routing_key: str | None = Field(None, min_length=1, max_length=128,
                                    description="PagerDuty integration key; required for pagerduty, only for it.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Total time one HTTP attempt may take.")
    dedup_window_s: float = Field(300.0, ge=0, le=86_400, description=(
        "The same dedup_key is sent at most once per window (0 = off); the next alert sent for the key reports how "
        "many were suppressed."))
    rate_per_minute: float = Field(60.0, gt=0, le=60_000, description=(
        "Token bucket refill rate; the bucket holds max(1, rate_per_minute) tokens. Excess alerts are dropped "
        "and counted."))
    max_queue: int = Field(1000, ge=1, le=1_000_000, description="Alerts waiting to be sent; overflow is counted.")
    max_attempts: int = Field(5, ge=1, le=20, description="Tries per alert before it is counted as failed.")
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="Wait before the first retry; doubles each try.")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description=(
        "Longest wait between tries; a longer Retry-After is cut to this."))

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not k or any(c in k for c in " :\r\n") or "\r" in val or "\n" in val:
                raise ValueError(f"header {k!r} is not a valid HTTP header")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> SinkConfig:
        if self.kind == "pagerduty" and not self.routing_key:
            raise ValueError(f"sink {self.name!r}: routing_key is required for kind 'pagerduty'")
        if self.kind != "pagerduty" and self.routing_key is not None:
            raise ValueError(f"sink {self.name!r}: routing_key only applies to kind 'pagerduty'")
        if self.kind != "pagerduty" and self.url is None:
            raise ValueError(f"sink {self.name!r}: url is required for kind {self.kind!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"sink {self.name!r}: backoff_max_s must be >= backoff_initial_s")
        return self

    @property
    def target(self) -> str:
        return self.url or PAGERDUTY_EVENTS_URL


class AlertsConfig(BaseModel):
    """The alert sinks, usually loaded from a JSON file: ``{"sinks": [{...}, ...]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sinks: list[SinkConfig] = Field(default_factory=list, max_length=64, description="Where alerts go.")

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        names = [s.name for s in self.sinks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sink names must be unique: {', '.join(dup)}")
        return self

    @classmethod
    def parse(cls, data: Any, where: str = "alerts config") -> AlertsConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidArgument(f"{where}: {_format_errors(e)}") from None

    @classmethod
    def load(cls, path: str | Path) -> AlertsConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidArgument(f"alerts config {path}: cannot read it ({e.strerror or e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"alerts config {path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") \
                from None
        return cls.parse(data, f"alerts config {path}")


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
        else:
            parts.append(f"{loc or 'config'}: {msg}")
    return "; ".join(parts)


# --- payloads ------------------------------------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _features(alert: Alert) -> list[str]:
    top = alert.details.get("top_features") or []
    return [str(_json_default(f)) if not isinstance(f, str) else f for f in top]


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _webhook(alert: Alert) -> dict[str, Any]:
    body = dataclasses.asdict(alert)
    body["timestamp"] = _iso(alert.at)
    return body


def _slack(alert: Alert) -> dict[str, Any]:
    feats = ", ".join(_features(alert)) or "-"
    fields = [("Severity", alert.severity), ("Type", alert.anomaly_type or "-"), ("Score", f"{alert.score:.3f}"),
              ("Model", f"{alert.model} v{alert.version}"), ("Top features", feats)]
    context = f"dedup `{_mrkdwn(alert.dedup_key)}` \u00b7 {_iso(alert.at)}"
    if alert.suppressed:
        context += f" \u00b7 {alert.suppressed} similar suppressed"
    return {
        "text": _cut(f"[{alert.severity}] {alert.summary}", 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": False, "text": _cut(
                f"{alert.severity} {alert.anomaly_type or 'anomaly'} alert: {alert.model}", 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_mrkdwn(alert.summary), 3000)},
             "fields": [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{_mrkdwn(v)}", 2000)} for k, v in fields]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, 3000)}]},
        ],
    }


def _pagerduty(alert: Alert, routing_key: str) -> dict[str, Any]:
    details = {**alert.details, "score": alert.score, "severity": alert.severity, "model_version": alert.version}
    if alert.suppressed:
        details["suppressed"] = alert.suppressed
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": _cut(alert.dedup_key, 255),
        "payload": {
            "summary": _cut(alert.summary, 1024),
            "source": f"infer/{alert.model}",
            "severity": _PD_SEVERITY.get(alert.severity, "error"),
            "timestamp": _iso(alert.at),
            "component": alert.model,
            "group": f"{alert.model}:{alert.version}",
            "class": alert.anomaly_type or "anomaly",
            "custom_details": details,
        },
    }


def build_payload(sink: SinkConfig, alert: Alert) -> dict[str, Any]:
    """The JSON body ``sink`` receives for ``alert``."""
    if sink.kind == "slack":
        return _slack(alert)
    if sink.kind == "pagerduty":
        return _pagerduty(alert, sink.routing_key or "")
    return _webhook(alert)


# --- the manager ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SinkStats:
    """Counters of one sink (``queued`` is the current queue length, the rest only grow)."""

    sent: int = 0
    filtered: int = 0  # below min_severity
    deduplicated: int = 0
    rate_limited: int = 0
    dropped_queue_full: int = 0
    dropped_stopped: int = 0  # submitted after stop(), or still unsent when its grace ran out
    failed: int = 0
    retries: int = 0
    queued: int = 0


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass


class _Sink:
    """The state of one sink: its checks run in :meth:`AlertManager.submit`, its delivery in :meth:`run`."""

    def __init__(self, cfg: SinkConfig, now: float) -> None:
        self.cfg = cfg
        self.min_rank = _RANK[cfg.min_severity]
        self.stats = SinkStats()
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(cfg.max_queue)
        self.windows: dict[str, tuple[float, int]] = {}  # dedup_key -> (window start, suppressed since)
        self.sweep_at = 1024
        self.capacity = max(1.0, cfg.rate_per_minute)
        self.tokens = self.capacity
        self.refill_per_s = cfg.rate_per_minute / 60.0
        self.last_refill = now
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        self.headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **cfg.headers}

    def offer(self, alert: Alert, now: float) -> bool:
        """The cheap checks, in order; True when the alert was queued."""
        st = self.stats
        if _RANK.get(alert.severity, 0) < self.min_rank:
            st.filtered += 1
            return False
        key = alert.dedup_key
        window = self.cfg.dedup_window_s
        seen = self.windows.get(key) if window > 0 else None
        if seen is not None and now - seen[0] < window:
            self.windows[key] = (seen[0], seen[1] + 1)
            st.deduplicated += 1
            return False
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last_refill) * self.refill_per_s)
        self.last_refill = now
        if self.tokens < 1.0:
            st.rate_limited += 1
            return False
        if seen is not None and seen[1]:
            alert = dataclasses.replace(alert, suppressed=seen[1])
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            st.dropped_queue_full += 1
            return False
        self.tokens -= 1.0
        if window > 0:
            self.windows.pop(key, None)  # re-insert at the end: the dict stays in window-start order
            self.windows[key] = (now, 0)
            if len(self.windows) > self.sweep_at:
                self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        """Forget expired windows with nothing suppressed; past the cap, the oldest windows."""
        window = self.cfg.dedup_window_s
        kept = {k: v for k, v in self.windows.items() if v[1] or now - v[0] < window}
        if len(kept) > _MAX_DEDUP_KEYS:
            kept = dict(list(kept.items())[-_MAX_DEDUP_KEYS:])
        self.windows = kept
        self.sweep_at = max(1024, 2 * len(kept))

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            alert = await self.queue.get()
            try:
                await self._deliver(session, alert)
            except asyncio.CancelledError:
                self.stats.dropped_stopped += 1
                raise
            except Exception:  # a bug here must not kill the sink
                self.stats.failed += 1
                log.exception("alert sink %s: unexpected error delivering an alert", self.cfg.name)
            finally:
                self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> None:
        cfg = self.cfg
        body = json.dumps(build_payload(cfg, alert), default=_json_default, separators=(",", ":")).encode()
        reason = ""
        for attempt in range(cfg.max_attempts):
            try:
                await self._post(session, body)
                self.stats.sent += 1
                return
            except _Transient as e:
                reason, retry_after = str(e), e.retry_after
            except _Permanent as e:
                self.stats.failed += 1
                log.warning("alert sink %s: %s rejected an alert: %s", cfg.name, _redact(cfg.target), e)
                return
            if attempt + 1 == cfg.max_attempts:
                break
            self.stats.retries += 1
            backoff = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2.0**attempt)
            delay = retry_after if retry_after is not None else backoff * (0.5 + 0.5 * random.random())
            await asyncio.sleep(min(cfg.backoff_max_s, max(0.0, delay)))
        self.stats.failed += 1
        log.warning("alert sink %s: gave up on an alert after %d tries: %s", cfg.name, cfg.max_attempts, reason)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(self.cfg.target, data=body, headers=self.headers, timeout=self.timeout,
                                    allow_redirects=False) as resp:
                status = resp.status
                if 200 <= status < 300:
                    await resp.read()
                    return
                text = (await resp.text(errors="replace"))[:200]
                if status == 429 or status >= 500 or status == 408:
                    raise _Transient(f"HTTP {status} {text}", _retry_after(resp.headers.get("Retry-After")))
                raise _Permanent(f"HTTP {status} {text}")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _redact(url: str) -> str:
    """The URL without its path (Slack and many webhooks keep their secret there)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"


class AlertManager:
    """Routes alerts to the sinks of ``config``; see the module docstring for the order of checks.

    ``submit`` is for the event loop thread (it is not thread-safe); ``clock`` (epoch seconds) drives the
    de-duplication windows and token buckets, so tests can inject one.
    """

    def __init__(self, config: AlertsConfig, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        now = clock()
        self._sinks = [_Sink(s, now) for s in config.sinks]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def submit(self, alert: Alert) -> bool:
        """Queue ``alert`` for every sink that takes it; never blocks, never raises. True if any sink queued it."""
        if self._stopped:
            for s in self._sinks:
                s.stats.dropped_stopped += 1
            return False
        now = self._clock()
        queued = False
        for s in self._sinks:
            try:
                queued = s.offer(alert, now) or queued
            except Exception:  # a malformed alert must not break the caller's request
                s.stats.failed += 1
                log.exception("alert sink %s: could not queue an alert", s.cfg.name)
        return queued

    async def start(self) -> None:
        """Start one delivery task per sink (alerts submitted before this wait in the queues)."""
        if self._session is not None or self._stopped:
            return
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(8, 2 * len(self._sinks))))
        self._tasks = [asyncio.create_task(s.run(self._session), name=f"alert-sink-{s.cfg.name}")
                       for s in self._sinks]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking alerts, give the queued ones ``grace_s`` to go out, then cancel and count what is left."""
        if self._stopped:
            return
        self._stopped = True
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self._sinks)), max(0.0, grace_s))
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        for s in self._sinks:
            s.stats.dropped_stopped += s.queue.qsize()
            while not s.queue.empty():
                s.queue.get_nowait()
                s.queue.task_done()
        if self._session is not None:
            await self._session.close()
            self._session = None
        left = sum(s.stats.dropped_stopped for s in self._sinks)
        if left:
            log.warning("alerts: %d alerts were not sent before shutdown", left)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-sink counters by sink name."""
        out: dict[str, dict[str, int]] = {}
        for s in self._sinks:
            s.stats.queued = s.queue.qsize()
            out[s.cfg.name] = dataclasses.asdict(s.stats)
        return out


# --- from model outputs --------------------------------------------------------------------------------------------


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)


_ANOMALY_OUTPUTS = ("score", "severity", "anomaly_type", "top_features")


def flagged_rows(severity: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Indices of the rows (flattened) whose severity is neither NONE nor empty. Kernel programs answer bytes, ONNX
    STRING outputs str: compared with the matching pair, as one vectorised comparison each."""
    sev = severity.reshape(-1)
    if not sev.size:
        return np.zeros(0, np.intp)
    none, empty = (b"NONE", b"") if isinstance(sev[0], bytes | np.bytes_) else ("NONE", "")
    return np.flatnonzero((sev != none) & (sev != empty))


def alerts_from_response(model: str, version: str, outputs: Mapping[str, np.ndarray], request_id: str,
                         series_keys: list[str] | None = None, *, at: float | None = None,
                         events: Mapping[str, np.ndarray] | None = None) -> list[Alert]:
    """Alerts for the rows of an anomaly model's batch whose severity is not NONE.

    ``outputs`` holds ``score``, ``severity`` and ``anomaly_type`` shaped [N, 1] and ``top_features`` [N, k] (BYTES
    as bytes objects); other outputs with N rows go into ``details`` as they are. ``series_keys`` names each row's
    series for the dedup key (``model:type:series``; ``*`` without it); ``events``, optional per-row input fields,
    go into ``details["event"]``. Rows are filtered with numpy; Python only touches the rows that alert.
    """
    missing = [n for n in _ANOMALY_OUTPUTS if n not in outputs]
    if missing:
        raise InvalidArgument(f"alerts from {model}: outputs {missing} are missing")
    sev = np.asarray(outputs["severity"]).reshape(-1)
    n = sev.shape[0]
    if series_keys is not None and len(series_keys) != n:
        raise InvalidArgument(f"alerts from {model}: {len(series_keys)} series keys for {n} rows")
    if n == 0:
        return []
    rows = flagged_rows(sev)
    if rows.size == 0:
        return []
    score = np.asarray(outputs["score"], np.float64).reshape(n, -1)[rows, 0]
    kind = np.asarray(outputs["anomaly_type"]).reshape(n, -1)[rows, 0]
    top = np.asarray(outputs["top_features"]).reshape(n, -1)[rows]
    extra = {k: np.asarray(v)[rows] for k, v in outputs.items()
             if k not in _ANOMALY_OUTPUTS and np.ndim(v) >= 1 and np.shape(v)[0] == n}
    event = {k: np.asarray(v)[rows] for k, v in (events or {}).items() if np.ndim(v) >= 1 and np.shape(v)[0] == n}
    when = time.time() if at is None else at
    out: list[Alert] = []
    for j, i in enumerate(rows.tolist()):
        severity, anomaly_type, s = _text(sev[i]), _text(kind[j]), round(float(score[j]), 6)
        features = [_text(f) for f in top[j].tolist() if f]
        series = series_keys[i] if series_keys is not None else "*"
        details: dict[str, Any] = {"request_id": request_id, "row": i, "series": series, "top_features": features}
        for k, v in extra.items():
            details[k] = _plain(v[j])
        if event:
            details["event"] = {k: _plain(v[j]) for k, v in event.items()}
        summary = (f"{severity} {anomaly_type or 'unclassified'} anomaly in {model} v{version}, series {series} "
                   f"(score {s:.3f}; top features: {', '.join(features) or '-'})")
        out.append(Alert(model=model, version=version, severity=severity, score=s, anomaly_type=anomaly_type,
                         dedup_key=f"{model}:{anomaly_type}:{series}", summary=summary, details=details, at=when))
    return out


def _plain(v: Any) -> Any:
    """A numpy row or scalar as JSON-able Python (bytes decoded)."""
    if isinstance(v, np.ndarray):
        items = v.tolist()
        if isinstance(items, list):
            return [_text(x) if isinstance(x, bytes | bytearray) else x for x in items]
        v = items
    if isinstance(v, np.generic):
        v = v.item()
    return _text(v) if isinstance(v, bytes | bytearray) else v
