"""The ``infer`` command: serve, probe, models, version, build-default-repository."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from infer import __version__
from infer.cli_deploy import add_deploy_parser, add_history_parser

__all__ = ["main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    from infer.config.server import ServerConfig

    f = ServerConfig.model_fields

    def doc(name: str) -> str:
        return f[name].description or ""

    p.add_argument("--model-repository", type=Path, help=doc("model_repository"))
    p.add_argument("--host", default="0.0.0.0", help=doc("host"))
    p.add_argument("--grpc-port", type=int, default=8001, help=doc("grpc_port"))
    p.add_argument("--metrics-port", type=int, default=8002, help=doc("metrics_port"))
    p.add_argument("--model-control-mode", choices=["none", "explicit"], default="none", help=doc("model_control_mode"))
    p.add_argument("--load-model", action="append", default=[], dest="load_models", help=doc("load_models"))
    p.add_argument("--strict-model-config", action="store_true", help=doc("strict_model_config"))
    p.add_argument("--default-max-batch-size", type=int, default=64, help=doc("default_max_batch_size"))
    p.add_argument("--max-queue-size", type=int, default=4096, help=doc("max_queue_size"))
    p.add_argument("--max-concurrent-rpcs", type=int, default=4096, help=doc("max_concurrent_rpcs"))
    p.add_argument("--max-concurrent-streams", type=int, default=0, help=doc("max_concurrent_streams"))
    p.add_argument("--response-cache-bytes", type=int, default=64 * 2**20, help=doc("response_cache_bytes"))
    p.add_argument("--max-message-bytes", type=int, default=2**31 - 1, help=doc("max_message_bytes"))
    p.add_argument("--intra-op-threads", type=int, default=0, help=doc("intra_op_threads"))
    p.add_argument("--inter-op-threads", type=int, default=0, help=doc("inter_op_threads"))
    p.add_argument("--shutdown-grace", type=float, default=30.0, dest="shutdown_grace_s", help=doc("shutdown_grace_s"))
    p.add_argument("--reuse-port", action="store_true", help=doc("reuse_port"))
    p.add_argument("--tls-cert", type=Path, help=doc("tls_cert"))
    p.add_argument("--tls-key", type=Path, help=doc("tls_key"))
    p.add_argument("--tls-client-ca", type=Path, help=doc("tls_client_ca"))
    p.add_argument("--registry-dir", type=Path, help=doc("registry_dir"))
    p.add_argument("--registry-url", help=doc("registry_url"))
    p.add_argument("--artifact-import-dir", type=Path, action="append", default=[], dest="artifact_import_dirs",
                   help=doc("artifact_import_dirs"))
    p.add_argument("--auth-tokens", type=Path, help=doc("auth_tokens"))
    p.add_argument("--audit-log", type=Path, help=doc("audit_log"))
    p.add_argument("--alerts-config", type=Path, help=doc("alerts_config"))
    p.add_argument("--state-dir", type=Path, help=doc("state_dir"))
    p.add_argument("--deployment-sync", type=float, default=1.0, dest="deployment_sync_s",
                   help=doc("deployment_sync_s"))
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--port-file", type=Path, help="Write the bound ports as JSON here once serving.")


def _cmd_serve(a: argparse.Namespace) -> int:
    from infer.app import serve
    from infer.config.server import ServerConfig

    fields = {k: v for k, v in vars(a).items() if k in ServerConfig.model_fields}
    try:
        cfg = ServerConfig(**fields)
    except ValidationError as e:
        print(f"infer serve: invalid option: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    try:
        import uvloop  # optional: faster event loop where installed

        uvloop.install()
    except ImportError:
        pass
    try:
        return asyncio.run(serve(cfg, a.port_file, control_only=a.command == "control"))
    except Exception:  # through the log's redaction, not straight to stderr
        logging.getLogger("infer").exception("infer %s: unexpected failure", a.command)
        return 1


class _RedactingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with secrets scrubbed (tokens, passwords, private keys)."""

    def format(self, record: logging.LogRecord) -> str:
        from infer.auth import redact

        return redact(super().format(record))


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper())
    formatter = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server's certificate: connect with TLS.")
    p.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS).")
    p.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert.")


def _channel(a: argparse.Namespace) -> object:
    import grpc

    if a.tls_ca is None:
        return grpc.insecure_channel(a.address)
    creds = grpc.ssl_channel_credentials(
        root_certificates=a.tls_ca.read_bytes(),
        private_key=a.tls_key.read_bytes() if a.tls_key else None,
        certificate_chain=a.tls_cert.read_bytes() if a.tls_cert else None,
    )
    return grpc.secure_channel(a.address, creds)


def _cmd_probe(a: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with _channel(a) as ch:  # type: ignore[attr-defined]
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=a.service), timeout=a.timeout
            )
    except grpc.RpcError as e:
        print(f"infer probe: {a.address} {a.service or '(liveness)'}: {e.code().name} {e.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(f"{a.service or 'live'}: {status}")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


def _cmd_models(a: argparse.Namespace) -> int:
    import grpc

    from infer._proto import grpc_service_pb2 as pb
    from infer._proto import grpc_service_pb2_grpc as pb_grpc

    try:
        with _channel(a) as ch:  # type: ignore[attr-defined]
            stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
            md = [("authorization", f"Bearer {a.token}")] if a.token else None
            idx = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=a.timeout, metadata=md)
    except grpc.RpcError as e:
        print(f"infer models list: {e.code().name} {e.details()}", file=sys.stderr)
        return 1
    print(f"{'MODEL':<32} {'VERSION':<8} {'STATE':<12} REASON")
    for m in idx.models:
        print(f"{m.name:<32} {m.version:<8} {m.state:<12} {m.reason}")
    return 0


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"infer registry: {what} '{item}' is not KEY=VALUE")
        out[key] = value
    return out


def _registry_request(a: argparse.Namespace) -> tuple[str, object]:
    """The ControlPlane method and request for ``infer registry <command>``."""
    import json
    import re

    from infer._proto import control_pb2 as cpb

    if a.registry_command == "register":
        params = {k: v if _is_json(v) else json.dumps(v) for k, v in _kv(a.param, "--param").items()}
        version = cpb.ModelVersion(
            model_id=a.model_id, version=a.version, model_type=a.model_type, framework=a.framework,
            metrics={k: float(v) for k, v in _kv(a.metric, "--metric").items()}, hyperparameters=params,
            parent_version=a.parent or "", training_run=a.training_run or "",
            training_data_id=a.training_data_id or "", training_data_size=a.training_data_size,
            trained_at=a.trained_at or 0.0,
        )
        return "RegisterVersion", cpb.RegisterVersionRequest(
            version=version, content=a.artifact.read_bytes(), artifact_name=a.artifact.name, reason=a.reason)
    if a.registry_command == "list":
        req = cpb.ListVersionsRequest(model_id=a.model_id or "", status=a.status or "",
                                      model_type=a.model_type or "", framework=a.framework or "")
        if a.where:
            m = re.fullmatch(r"\s*([\w.\-]+)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*", a.where)
            if m is None:
                raise SystemExit(f"infer registry list: --where '{a.where}' is not METRIC OP NUMBER")
            req.metric, req.op, req.value = m.group(1), m.group(2), float(m.group(3))
        return "ListVersions", req
    if a.registry_command == "compare":
        return "CompareVersions", cpb.CompareVersionsRequest(model_id=a.model_id, version_a=a.a, version_b=a.b)
    if a.registry_command == "transition":
        return "TransitionVersion", cpb.TransitionRequest(model_id=a.model_id, version=a.version, source=a.source,
                                                          target=a.target, reason=a.reason)
    ref = cpb.VersionRef(model_id=a.model_id, version=a.version)
    return ("GetVersion" if a.registry_command == "get" else "VersionHistory"), ref


def _is_json(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _cmd_control(a: argparse.Namespace) -> int:
    """One ControlPlane call built by the command's ``build`` function; the reply printed as JSON."""
    import grpc
    from google.protobuf import json_format

    from infer._proto import control_pb2_grpc as cpb_grpc

    method, request = a.build(a)
    md = [("authorization", f"Bearer {a.token}")] if a.token else None
    try:
        with _channel(a) as ch:  # type: ignore[attr-defined]
            stub = cpb_grpc.ControlPlaneStub(ch)  # type: ignore[no-untyped-call]
            reply = getattr(stub, method)(request, timeout=a.timeout, metadata=md)
    except grpc.RpcError as e:
        command = getattr(a, "registry_command", None) or getattr(a, "deploy_command", None) or ""
        print(f"infer {a.label} {command}".rstrip() + f": {e.code().name} {e.details()}", file=sys.stderr)
        return 1
    print(json_format.MessageToJson(reply, preserving_proto_field_name=True, indent=1))
    return 0


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of every control-plane command."""
    p.add_argument("--address", default="127.0.0.1:8001")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--token", default=os.environ.get("INFER_TOKEN", ""), help="bearer token (or $INFER_TOKEN)")
    _client_args(p)
    p.set_defaults(fn=_cmd_control)
    return p


def _registry_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("registry", help="Model registry: register, list, get, compare, history, transition.")
    r.set_defaults(build=_registry_request, label="registry")
    rsub = r.add_subparsers(dest="registry_command", required=True)

    common = _common

    reg = common(rsub.add_parser("register", help="Upload a model file and register a version of it."))
    for flag in ("--model-id", "--version", "--model-type", "--framework"):
        reg.add_argument(flag, required=True)
    reg.add_argument("--artifact", type=Path, required=True, help="the model file (e.g. model.onnx)")
    reg.add_argument("--metric", action="append", default=[], help="NAME=NUMBER, repeatable")
    reg.add_argument("--param", action="append", default=[], help="hyperparameter NAME=VALUE (JSON or text)")
    reg.add_argument("--parent", help="parent version (lineage)")
    reg.add_argument("--training-run")
    reg.add_argument("--training-data-id")
    reg.add_argument("--training-data-size", type=int, default=-1)
    reg.add_argument("--trained-at", type=float, help="seconds since the epoch")
    reg.add_argument("--reason", default="")
    ls = common(rsub.add_parser("list", help="List versions, filtered."))
    ls.add_argument("--model-id")
    ls.add_argument("--status")
    ls.add_argument("--model-type")
    ls.add_argument("--framework")
    ls.add_argument("--where", help="metric filter, e.g. 'auc>=0.9'")
    for name in ("get", "history"):
        p = common(rsub.add_parser(name, help=f"{name.capitalize()} one version."))
        p.add_argument("model_id")
        p.add_argument("version")
    cmp_ = common(rsub.add_parser("compare", help="What differs between two versions."))
    cmp_.add_argument("model_id")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    tr = common(rsub.add_parser("transition", help="Move a version from one status to another."))
    tr.add_argument("model_id")
    tr.add_argument("version")
    tr.add_argument("--from", dest="source", required=True)
    tr.add_argument("--to", dest="target", required=True)
    tr.add_argument("--reason", default="")


def _cmd_models_build(a: argparse.Namespace) -> int:
    from infer.tasks.default_repository import default_repository_path

    repo = a.path or default_repository_path()
    name = a.name or a.family
    home = name
    if a.family == "forecast":
        card, table = _build_forecast(repo, name, a)
    elif a.family == "nlp":
        card, table = _build_nlp(repo, name, a)
    elif a.family == "vision":
        from infer.tasks.vision.build import build_vision
        from infer.tasks.vision.card import model_card

        summary = build_vision(repo, name)
        card = model_card(summary)
        table = card[card.index("\n## "):card.index("## Segmentation")]
    else:
        from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline, clean_repository_model
        from infer.tasks.anomaly.pipeline_eval import markdown, model_card

        cfg = BuildConfig(n_train=a.events, n_validation=a.events // 2, n_test=a.events // 2, n_users=a.users,
                          seed=a.seed)
        clean_repository_model(repo, name)
        summary = build_pipeline(repo, name, cfg)
        card, table = model_card(summary), markdown(summary)
    (repo / home / "MODEL_CARD.md").write_text(card)
    if a.card:
        a.card.write_text(card)
    print(table)
    print(f"wrote {name} and its stage models into {repo} (model card: {repo / home / 'MODEL_CARD.md'})")
    return 0


def _build_nlp(repo: Path, name: str, a: argparse.Namespace) -> tuple[str, str]:
    from infer.tasks.nlp.build import build_nlp
    from infer.tasks.nlp.card import model_card
    from infer.tasks.nlp.text import default_data_dir

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = None if a.no_data else (a.data or default_data_dir())
    summary = build_nlp(repo, name, data_dir=data, small=a.small)
    (repo / name / "metrics.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    card = model_card(summary)
    return card, card[card.index("\n## "):card.index("## Limits")]


def _build_forecast(repo: Path, name: str, a: argparse.Namespace) -> tuple[str, str]:
    from infer.tasks.forecast.build import BuildConfig, build_forecast, clean_repository_model
    from infer.tasks.forecast.data import default_data_dir
    from infer.tasks.forecast.evaluate import markdown, model_card

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = None if a.no_data else (a.data or default_data_dir())
    cfg = BuildConfig(data_dir=data, seed=a.seed, peer=not a.no_peer)
    if a.small:
        cfg = cfg.scaled_down()
    clean_repository_model(repo, name)
    summary = build_forecast(repo, name, cfg)
    (repo / name / "metrics.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return model_card(summary), markdown(summary)


def _cmd_models_index(a: argparse.Namespace) -> int:
    from infer.tasks.default_repository import default_repository_path
    from infer.tasks.vision.build import build_search_model

    repo = a.path or default_repository_path()
    if a.texts is not None:
        from infer.tasks.nlp.search import index_folder

        name = a.name or "nlp_search"
        try:
            _, count = index_folder(repo, a.texts, name=name, encoder=a.classifier or "nlp_embed",
                                    neighbours=a.neighbours)
        except (ValueError, OSError) as e:
            print(str(e), file=sys.stderr)
            return 2
        print(f"indexed {count} texts into {repo / name}")
        return 0
    files = {p.name: p.read_bytes() for p in sorted(a.images.iterdir()) if p.is_file()}
    if not files:
        print(f"no image files in {a.images}", file=sys.stderr)
        return 2
    name = a.name or "vision_search"
    build_search_model(repo, files, name=name, classifier=a.classifier or "vision_classify", neighbours=a.neighbours)
    print(f"indexed {len(files)} images into {repo / name} (ids: the file names)")
    return 0


def _cmd_build(a: argparse.Namespace) -> int:
    from infer.tasks.default_repository import build_default_repository, default_repository_path

    path = a.path or default_repository_path()
    path.mkdir(parents=True, exist_ok=True)
    names = build_default_repository(path)
    print(f"built {', '.join(names)} into {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer", description="gRPC inference engine (Open Inference Protocol).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="Serve a model repository over gRPC.")
    _serve_args(s)
    s.set_defaults(fn=_cmd_serve)
    c = sub.add_parser("control", help="Serve the control plane alone (registry, deployments, audit).")
    _serve_args(c)
    c.set_defaults(fn=_cmd_serve)
    pr = sub.add_parser("probe", help="gRPC health check; exit 0 when SERVING (for Kubernetes exec probes).")
    pr.add_argument("--address", default="127.0.0.1:8001")
    pr.add_argument("--service", default="", help="'' = liveness, 'ready' = readiness, 'model/NAME' = one model.")
    pr.add_argument("--timeout", type=float, default=2.0)
    _client_args(pr)
    pr.set_defaults(fn=_cmd_probe)
    m = sub.add_parser("models", help="Model commands.")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="List the repository's models and their states.")
    ml.add_argument("--address", default="127.0.0.1:8001")
    ml.add_argument("--timeout", type=float, default=5.0)
    _client_args(ml)
    ml.add_argument("--token", default=os.environ.get("INFER_TOKEN", ""), help="bearer token (or $INFER_TOKEN)")
    ml.set_defaults(fn=_cmd_models)
    mb = msub.add_parser("build", help="Train, evaluate and write a model family into a repository.")
    mb.add_argument("family", choices=["anomaly", "forecast", "vision", "nlp"])
    mb.add_argument("--path", type=Path, help="repository (default: the embedded default repository's place)")
    mb.add_argument("--name", help="model name (default: the family; stage and per-kind models get it as a prefix)")
    mb.add_argument("--card", type=Path, help="also write the model card here")
    mb.add_argument("--seed", type=int, default=0)
    mb.add_argument("--events", type=int, default=60_000, help="anomaly: training events (validation, test: half)")
    mb.add_argument("--users", type=int, default=50, help="anomaly: users in the generated streams")
    mb.add_argument("--data", type=Path, help="forecast: the M4/ETT directory (default: ../shared/data/forecast); "
                    "nlp: the data root holding nlp/sst2, nlp/clinc150, nlp/agnews (default: ../shared/data)")
    mb.add_argument("--no-data", action="store_true", help="forecast: package and generated series only; nlp: no "
                    "labelled sets (no classification heads; keywords and topics on a corpus Python ships)")
    mb.add_argument("--small", action="store_true", help="forecast: a few series, fewer trees and epochs; nlp: "
                    "subsampled training sets")
    mb.add_argument("--no-peer", action="store_true", help="forecast: skip statsforecast's AutoETS/AutoARIMA")
    mb.set_defaults(fn=_cmd_models_build)
    mi = msub.add_parser("index", help="Index images (vision_search) or texts (nlp_search) for similarity search.")
    what = mi.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", type=Path, help="a folder of encoded image files (ids: file names)")
    what.add_argument("--texts", type=Path, help="a folder of .txt/.jsonl files or one JSON-lines file of "
                      '{"id": ..., "text": ...} (ids: file names or the id fields)')
    mi.add_argument("--path", type=Path, help="repository holding the encoder (default: the default one)")
    mi.add_argument("--name", help="the search model to write (default: vision_search / nlp_search)")
    mi.add_argument("--classifier", help="the model whose embedding is indexed (default: vision_classify / "
                    "nlp_embed)")
    mi.add_argument("--neighbours", type=int, default=5)
    mi.set_defaults(fn=_cmd_models_index)
    add_history_parser(msub, _common)
    _registry_parser(sub)
    add_deploy_parser(sub, _common)
    v = sub.add_parser("version", help="Print infer's version.")
    v.set_defaults(fn=lambda a: print(f"infer {__version__}") or 0)
    b = sub.add_parser("build-default-repository", help="Train and export the default models.")
    b.add_argument("--path", type=Path, help="Where to build (default: the embedded default location).")
    b.set_defaults(fn=_cmd_build)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
