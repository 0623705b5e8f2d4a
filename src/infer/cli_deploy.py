"""``infer deploy ...`` and ``infer models history``: deployment and lifecycle commands over the control API.

Each command builds one ControlPlane request; :func:`infer.cli._cmd_control` sends it and prints the reply as
JSON. A deployment spec is the ``Deployment`` message in protobuf's JSON mapping (README: "Deployments")::

    infer deploy set fraud --file fraud.json          # create or replace (--revision N: only if still at N)
    infer deploy get fraud | list | delete fraud
    infer deploy experiment fraud                      # A/B figures and the significance test
    infer deploy outcome REQUEST_ID 1                  # credit an outcome to the variant that answered
    infer models history anomaly --version 1           # LOAD -> WARM -> ACTIVE ... moves, with reasons
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_deploy_parser", "add_history_parser"]

Common = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _read_spec(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise SystemExit(f"infer deploy set: cannot read {path}: {e.strerror}") from None


def _deploy_request(a: argparse.Namespace) -> tuple[str, object]:
    from google.protobuf import json_format

    from infer._proto import control_pb2 as cpb

    cmd = a.deploy_command
    if cmd == "set":
        text = _read_spec(a.file)
        try:
            dep = json_format.Parse(text, cpb.Deployment())
        except (json_format.ParseError, json.JSONDecodeError) as e:
            raise SystemExit(f"infer deploy set: {a.file} is not a Deployment in JSON: {e}") from None
        if dep.name and dep.name != a.name:
            raise SystemExit(f"infer deploy set: the file names '{dep.name}', the command '{a.name}'")
        dep.name = a.name
        if a.revision:
            dep.revision = a.revision
        return "SetDeployment", dep
    if cmd == "list":
        return "ListDeployments", cpb.ListDeploymentsRequest()
    if cmd == "outcome":
        return "ReportOutcome", cpb.OutcomeRequest(request_id=a.request_id, value=a.value)
    ref = cpb.DeploymentRef(name=a.name, revision=getattr(a, "revision", 0) or 0)
    return {"get": "GetDeployment", "delete": "DeleteDeployment", "experiment": "GetExperiment"}[cmd], ref


def add_deploy_parser(sub: argparse._SubParsersAction, common: Common) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("deploy", help="Deployments: A/B splits, canaries, shadows, fallback chains.")
    dsub = d.add_subparsers(dest="deploy_command", required=True)
    s = common(dsub.add_parser("set", help="Create or replace a deployment from a JSON spec."))
    s.add_argument("name")
    s.add_argument("--file", "-f", required=True, help="Deployment JSON ('-' = stdin)")
    s.add_argument("--revision", type=int, default=0, help="apply only if the stored revision is still this")
    for name, text in (("get", "Show one deployment."), ("experiment", "A/B figures and significance test.")):
        p = common(dsub.add_parser(name, help=text))
        p.add_argument("name")
    rm = common(dsub.add_parser("delete", help="Delete a deployment."))
    rm.add_argument("name")
    rm.add_argument("--revision", type=int, default=0, help="delete only if the stored revision is still this")
    common(dsub.add_parser("list", help="List deployments."))
    o = common(dsub.add_parser("outcome", help="Report an outcome for an earlier request id."))
    o.add_argument("request_id")
    o.add_argument("value", type=float)
    d.set_defaults(build=_deploy_request, label="deploy")


def _history_request(a: argparse.Namespace) -> tuple[str, object]:
    from infer._proto import control_pb2 as cpb

    return "ServingHistory", cpb.ServingHistoryRequest(model=a.model, version=a.version, limit=a.limit)


def add_history_parser(msub: argparse._SubParsersAction, common: Common) -> None:  # type: ignore[type-arg]
    h = common(msub.add_parser("history", help="Lifecycle moves of a served model's versions, with reasons."))
    h.add_argument("model")
    h.add_argument("--version", type=int, default=0, help="one version (default: all)")
    h.add_argument("--limit", type=int, default=100)
    h.set_defaults(build=_history_request, label="models history")
