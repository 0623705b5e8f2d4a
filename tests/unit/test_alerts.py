"""Alerts without sockets: config validation, payload shapes, the submit-side checks on an injected clock."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infer.errors import InvalidArgument
from infer.observability.alerts import (
    PAGERDUTY_EVENTS_URL,
    Alert,
    AlertManager,
    AlertsConfig,
    SinkConfig,
    _retry_after,
    alerts_from_response,
    build_payload,
)

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _alert(severity: str = "HIGH", key: str = "m:statistical:s1", **kw: Any) -> Alert:
    fields: dict[str, Any] = dict(model="m", version="1", severity=severity, score=0.93, anomaly_type="statistical",
                                  dedup_key=key, summary="HIGH statistical anomaly <x> & y",
                                  details={"request_id": "r1", "top_features": ["a", "b"]}, at=T0)
    fields.update(kw)
    return Alert(**fields)


def _sink(**kw: Any) -> dict[str, Any]:
    return {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:1/hook", **kw}


def _manager(clock: Clock, **kw: Any) -> AlertManager:
    return AlertManager(AlertsConfig.parse({"sinks": [_sink(**kw)]}), clock=clock)


# --- config --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sink", "message"), [
    ({"kind": "pagerduty", "url": None}, "sinks[0]: sink 'hook': routing_key is required for kind 'pagerduty'"),
    ({"routing_key": "abc"}, "routing_key only applies to kind 'pagerduty'"),
    ({"kind": "slack", "url": None}, "url is required for kind 'slack'"),
    ({"url": "ftp://x/y"}, "sinks[0].url: must be an http:// or https:// URL"),
    ({"kind": "email"}, "sinks[0].kind: Input should be 'webhook', 'slack' or 'pagerduty'"),
    ({"min_severity": "NONE"}, "sinks[0].min_severity"),
    ({"rate_per_minute": 0}, "sinks[0].rate_per_minute: Input should be greater than 0"),
    ({"max_queue": 0}, "sinks[0].max_queue"),
    ({"colour": "red"}, "sinks[0].colour: unknown field"),
    ({"headers": {"Bad Name": "x"}}, "sinks[0].headers: header 'Bad Name' is not a valid HTTP header"),
    ({"backoff_initial_s": 5, "backoff_max_s": 1}, "backoff_max_s must be >= backoff_initial_s"),
])
def test_bad_sink_config_names_the_field(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        AlertsConfig.parse({"sinks": [_sink(**sink)]})
    assert message in e.value.message


def test_sink_names_must_be_unique() -> None:
    with pytest.raises(InvalidArgument, match="sink names must be unique: hook"):
        AlertsConfig.parse({"sinks": [_sink(), _sink()]})


def test_load_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps({"sinks": [_sink(), {"name": "pd", "kind": "pagerduty", "routing_key": "k"}]}))
    cfg = AlertsConfig.load(path)
    hook, pd = cfg.sinks
    assert (hook.min_severity, hook.dedup_window_s, hook.rate_per_minute, hook.max_queue) == ("HIGH", 300, 60, 1000)
    assert pd.url is None and pd.target == PAGERDUTY_EVENTS_URL
    path.write_text('{"sinks": [')
    with pytest.raises(InvalidArgument, match=r"alerts\.json: not JSON: .* line 1"):
        AlertsConfig.load(path)
    with pytest.raises(InvalidArgument, match="cannot read it"):
        AlertsConfig.load(tmp_path / "missing.json")
    path.write_text(json.dumps({"sinks": [_sink(timeout_s=-1)]}))
    with pytest.raises(InvalidArgument, match=r"sinks\[0\]\.timeout_s: Input should be greater than 0"):
        AlertsConfig.load(path)


# --- payloads ------------------------------------------------------------------------------------------------------


def test_webhook_payload_is_the_alert() -> None:
    body = build_payload(SinkConfig.model_validate(_sink()), _alert(suppressed=2))
    assert body == {"model": "m", "version": "1", "severity": "HIGH", "score": 0.93, "anomaly_type": "statistical",
                    "dedup_key": "m:statistical:s1", "summary": "HIGH statistical anomaly <x> & y",
                    "details": {"request_id": "r1", "top_features": ["a", "b"]}, "at": T0, "suppressed": 2,
                    "timestamp": "2023-11-14T22:13:20.000+00:00"}
    json.dumps(body)


def test_slack_payload_has_header_and_fields() -> None:
    body = build_payload(SinkConfig.model_validate(_sink(kind="slack")), _alert(suppressed=3))
    assert body["text"] == "[HIGH] HIGH statistical anomaly <x> & y"
    header, section, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert header["text"]["text"] == "HIGH statistical alert: m" and len(header["text"]["text"]) <= 150
    assert section["text"]["text"] == "HIGH statistical anomaly &lt;x&gt; &amp; y"  # mrkdwn escaped
    assert [f["text"] for f in section["fields"]] == [
        "*Severity*\nHIGH", "*Type*\nstatistical", "*Score*\n0.930", "*Model*\nm v1", "*Top features*\na, b"]
    assert all(f["type"] == "mrkdwn" for f in section["fields"])
    assert "3 similar suppressed" in context["elements"][0]["text"]


@pytest.mark.parametrize(("severity", "pd"), [("LOW", "info"), ("MEDIUM", "warning"), ("HIGH", "error"),
                                              ("CRITICAL", "critical")])
def test_pagerduty_payload(severity: str, pd: str) -> None:
    sink = SinkConfig.model_validate({"name": "pd", "kind": "pagerduty", "routing_key": "R" * 32})
    body = build_payload(sink, _alert(severity, at=T0 + 0.25, details={"top_features": [b"a"], "x": np.float32(1)}))
    assert body["routing_key"] == "R" * 32 and body["event_action"] == "trigger"
    assert body["dedup_key"] == "m:statistical:s1"
    p = body["payload"]
    assert p["severity"] == pd and p["summary"] == "HIGH statistical anomaly <x> & y"
    assert p["timestamp"] == "2023-11-14T22:13:20.250+00:00"
    assert datetime.fromisoformat(p["timestamp"]).timestamp() == T0 + 0.25
    assert (p["source"], p["component"], p["group"], p["class"]) == ("infer/m", "m", "m:1", "statistical")
    assert p["custom_details"]["score"] == 0.93 and p["custom_details"]["severity"] == severity
    assert set(body) == {"routing_key", "event_action", "dedup_key", "payload"}


def test_long_texts_are_cut_to_the_services_limits() -> None:
    sink = SinkConfig.model_validate({"name": "pd", "kind": "pagerduty", "routing_key": "k"})
    body = build_payload(sink, _alert(summary="s" * 5000, key="k" * 400))
    assert len(body["payload"]["summary"]) == 1024 and len(body["dedup_key"]) == 255
    slack = build_payload(SinkConfig.model_validate(_sink(kind="slack")), _alert(model="m" * 500))
    assert len(slack["blocks"][0]["text"]["text"]) == 150


def test_retry_after_parsing() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now


# --- submit-side checks --------------------------------------------------------------------------------------------


def test_severity_filter() -> None:
    m = _manager(Clock(), min_severity="MEDIUM")
    assert not m.submit(_alert("LOW", key="a"))
    assert not m.submit(_alert("NONE", key="b"))
    assert not m.submit(_alert("bogus", key="c"))
    assert m.submit(_alert("MEDIUM", key="d")) and m.submit(_alert("CRITICAL", key="e"))
    s = m.stats()["hook"]
    assert (s["filtered"], s["queued"]) == (3, 2)


def test_dedup_window_suppresses_then_reports_the_count() -> None:
    clock = Clock()
    m = _manager(clock, dedup_window_s=300)
    assert m.submit(_alert())
    clock.now += 10
    assert not m.submit(_alert()) and not m.submit(_alert())
    assert m.submit(_alert(key="m:statistical:s2"))  # another key is not affected
    clock.now += 290  # window of the first alert is over
    assert m.submit(_alert())
    s = m.stats()["hook"]
    assert (s["deduplicated"], s["queued"]) == (2, 3)
    queue = m._sinks[0].queue
    sent = [queue.get_nowait() for _ in range(3)]
    assert [a.suppressed for a in sent] == [0, 0, 2]
    clock.now += 300
    assert m.submit(_alert())
    assert queue.get_nowait().suppressed == 0  # the count was reported once


def test_dedup_off_with_zero_window() -> None:
    m = _manager(Clock(), dedup_window_s=0)
    assert all(m.submit(_alert()) for _ in range(5))
    assert m.stats()["hook"]["deduplicated"] == 0


def test_token_bucket() -> None:
    clock = Clock()
    m = _manager(clock, rate_per_minute=6, dedup_window_s=0)  # bucket of 6, one token per 10 s
    assert [m.submit(_alert()) for _ in range(8)] == [True] * 6 + [False] * 2
    clock.now += 9.9
    assert not m.submit(_alert())
    clock.now += 0.1
    assert m.submit(_alert()) and not m.submit(_alert())
    clock.now += 1000  # refills to the bucket size, not beyond
    assert sum(m.submit(_alert()) for _ in range(10)) == 6
    assert m.stats()["hook"]["rate_limited"] == 2 + 1 + 1 + 4


def test_rate_limited_alert_does_not_start_a_dedup_window() -> None:
    clock = Clock()
    m = _manager(clock, rate_per_minute=1)
    assert m.submit(_alert(key="a"))
    assert not m.submit(_alert(key="b"))  # no token
    clock.now += 60
    assert m.submit(_alert(key="b"))  # not suppressed: it was never sent
    s = m.stats()["hook"]
    assert (s["rate_limited"], s["deduplicated"]) == (1, 0)


def test_bounded_queue_overflow_is_counted_and_keeps_the_token() -> None:
    clock = Clock()
    m = _manager(clock, max_queue=3, rate_per_minute=5)
    assert [m.submit(_alert(key=str(i))) for i in range(5)] == [True] * 3 + [False] * 2
    s = m.stats()["hook"]
    assert (s["dropped_queue_full"], s["queued"], s["rate_limited"]) == (2, 3, 0)
    m._sinks[0].queue.get_nowait()
    assert m.submit(_alert(key="x"))  # a dropped alert cost no token and opened no dedup window
    assert m.submit(_alert(key="3")) is False and m.stats()["hook"]["dropped_queue_full"] == 3


def test_sinks_are_independent() -> None:
    cfg = AlertsConfig.parse({"sinks": [_sink(name="all", min_severity="LOW"), _sink(name="pages")]})
    m = AlertManager(cfg, clock=Clock())
    assert m.submit(_alert("LOW"))
    st = m.stats()
    assert st["all"]["queued"] == 1 and st["pages"]["filtered"] == 1


def test_submit_never_raises() -> None:
    m = _manager(Clock())
    assert m.submit(_alert(key=["unhashable"])) is False  # type: ignore[arg-type]  # counted, not raised
    assert m.stats()["hook"]["failed"] == 1


def test_dedup_table_is_swept() -> None:
    clock = Clock()
    m = _manager(clock, rate_per_minute=60_000, max_queue=100_000)
    for i in range(1500):
        m.submit(_alert(key=str(i)))
    clock.now += 301
    for i in range(1500, 2100):
        m.submit(_alert(key=str(i)))
    assert len(m._sinks[0].windows) < 1500


# --- alerts_from_response ------------------------------------------------------------------------------------------


def _outputs() -> dict[str, np.ndarray]:
    return {
        "score": np.array([[0.1], [0.95], [0.2], [0.7]], np.float32),
        "is_anomalous": np.array([[False], [True], [False], [True]]),
        "severity": np.array([[b"NONE"], [b"CRITICAL"], [b"NONE"], [b"MEDIUM"]], dtype=object),
        "anomaly_type": np.array([[b""], [b"security"], [b""], [b"temporal"]], dtype=object),
        "top_features": np.array([[b"a", b"b"], [b"logins", b"hour"], [b"c", b"d"], [b"hour", b""]], dtype=object),
        "detector_probs": np.array([[0.1, 0.2], [0.9, 0.99], [0.1, 0.1], [0.6, 0.7]], np.float32),
    }


def test_alerts_from_response_keeps_only_alerting_rows() -> None:
    events = {"user": np.array([b"u0", b"u1", b"u2", b"u3"], dtype=object), "bytes": np.arange(4, dtype=np.int64)}
    alerts = alerts_from_response("anomaly", "2", _outputs(), "req-7", ["s0", "s1", "s2", "s3"], at=T0,
                                  events=events)
    assert [a.severity for a in alerts] == ["CRITICAL", "MEDIUM"]
    crit, med = alerts
    assert (crit.model, crit.version, crit.anomaly_type, crit.at) == ("anomaly", "2", "security", T0)
    assert crit.score == pytest.approx(0.95) and isinstance(crit.score, float)
    assert crit.dedup_key == "anomaly:security:s1" and med.dedup_key == "anomaly:temporal:s3"
    assert crit.details["top_features"] == ["logins", "hour"] and med.details["top_features"] == ["hour"]
    assert crit.details["request_id"] == "req-7" and crit.details["row"] == 1 and crit.details["series"] == "s1"
    assert crit.details["is_anomalous"] == [True]
    assert crit.details["detector_probs"] == pytest.approx([0.9, 0.99])
    assert crit.details["event"] == {"user": "u1", "bytes": 1}
    assert "CRITICAL security anomaly in anomaly v2" in crit.summary and "logins, hour" in crit.summary
    json.dumps([a.details for a in alerts])


def test_alerts_from_response_edge_cases() -> None:
    out = _outputs()
    out["severity"][:] = b"NONE"
    assert alerts_from_response("m", "1", out, "r", None) == []
    alerts = alerts_from_response("m", "1", _outputs(), "r", None)
    assert [a.dedup_key for a in alerts] == ["m:security:*", "m:temporal:*"]
    with pytest.raises(InvalidArgument, match="3 series keys for 4 rows"):
        alerts_from_response("m", "1", _outputs(), "r", ["a", "b", "c"])
    with pytest.raises(InvalidArgument, match="'top_features'"):
        alerts_from_response("m", "1", {k: v for k, v in _outputs().items() if k != "top_features"}, "r", None)


def test_alerts_from_response_feed_the_manager() -> None:
    m = AlertManager(AlertsConfig.parse({"sinks": [_sink(min_severity="MEDIUM")]}), clock=Clock())
    for a in alerts_from_response("m", "1", _outputs(), "r", ["s0", "s1", "s2", "s3"]):
        m.submit(a)
    for a in alerts_from_response("m", "1", _outputs(), "r2", ["s0", "s1", "s2", "s3"]):
        m.submit(a)
    s = m.stats()["hook"]
    assert (s["queued"], s["deduplicated"]) == (2, 2)


def test_alerts_from_response_takes_decoded_strings_too() -> None:
    out = {k: (np.char.decode(v.astype("S")) if v.dtype == object else v) for k, v in _outputs().items()}
    out["severity"] = np.array([["NONE"], ["HIGH"], [""], ["LOW"]])
    alerts = alerts_from_response("m", "1", out, "r", None)
    assert [(a.severity, a.anomaly_type) for a in alerts] == [("HIGH", "security"), ("LOW", "temporal")]
    assert alerts[0].details["top_features"] == ["logins", "hour"]
    empty = {k: v[:0] for k, v in _outputs().items()}
    assert alerts_from_response("m", "1", empty, "r", []) == []
