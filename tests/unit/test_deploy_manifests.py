"""The manifests under deploy/ and the Dockerfile (no sockets, no cluster, no Docker).

Schema validation runs offline: Kubernetes kinds against the schemas kubernetes-validate ships, custom resources
against deploy/schemas/ (deploy/validate.py, the same code as scripts/validate_deploy.sh). The rest checks the
manifests against the server itself: the probes ask the health services it publishes, the container args parse
with ``infer serve``'s own parser, the HPA scales on a metric it exports, and the image runs as the user the pods
expect.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
SKIP_VALIDATOR = "kubernetes-validate (the dev extra) is not installed: schema validation skipped"


def _validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infer_deploy_validate", DEPLOY / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _one(kind: str, folder: Path = K8S) -> dict[str, Any]:
    found = [d for p in sorted(folder.glob("*.yaml")) for d in _docs(p) if d.get("kind") == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects in {folder}"
    obj: dict[str, Any] = found[0]
    return obj


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    assert isinstance(container, dict)
    return container


def _subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


# ---------------------------------------------------------------------------------------------- schema validation


def test_every_manifest_is_schema_valid() -> None:
    pytest.importorskip("kubernetes_validate", reason=SKIP_VALIDATOR)
    errors = _validator().validate_tree(DEPLOY)
    assert errors == [], "\n".join(errors)


def test_every_kind_in_deploy_has_a_schema() -> None:
    pytest.importorskip("kubernetes_validate", reason=SKIP_VALIDATOR)
    v = _validator()
    files = v.manifest_files(DEPLOY)
    assert {p.name for p in files} >= {"deployment.yaml", "service.yaml", "hpa.yaml", "servicemonitor.yaml",
                                        "kustomization.yaml", "servingruntime.yaml", "inferenceservice.yaml"}
    for schema in [*v.CUSTOM.values(), *v.VALUES.values()]:
        assert (v.SCHEMAS / schema).is_file(), schema


def test_the_validator_rejects_broken_manifests(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes_validate", reason=SKIP_VALIDATOR)
    deployment = _one("Deployment")
    _container(deployment["spec"]["template"]["spec"])["readinessProbe"]["grpc"]["port"] = "grpc"  # must be a number
    runtime = _one("ServingRuntime", KSERVE)
    no_containers = {**runtime, "spec": {k: v for k, v in runtime["spec"].items() if k != "containers"}}
    runtime["spec"]["protocolVersions"] = ["grpc-v3"]
    monitor = _one("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    for i, doc in enumerate([deployment, runtime, no_containers, monitor, unknown]):
        (tmp_path / f"{i}.yaml").write_text(yaml.safe_dump(doc))
    errors = _validator().validate_tree(tmp_path, ["1.29"])
    text = "\n".join(errors)
    assert len(errors) == 5, text
    assert "readinessProbe.grpc.port: 'grpc' is not of type 'integer'" in text
    assert "'grpc-v3' is not one of" in text
    assert "'containers' is a required property" in text
    assert "interval" in text and "does not match" in text
    assert "no schema for example.com/v1 Widget" in text


# ---------------------------------------------------------------------------------------------- cross-references


def test_service_pdb_and_hpa_point_at_the_deployment() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert _subset(deployment["spec"]["selector"]["matchLabels"], labels)
    assert service["spec"]["selector"] and _subset(service["spec"]["selector"], labels)
    assert _subset(_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    target = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])

    ports = {p["name"]: p["containerPort"] for p in _container(pod["spec"])["ports"]}
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: by_name[n]["port"] for n in by_name} == {"grpc": 8001, "metrics": 8002}
    for name, port in by_name.items():
        assert port["targetPort"] in ports, f"Service port {name} targets {port['targetPort']}, not a container port"

    monitor = _one("ServiceMonitor")["spec"]
    assert _subset(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def _serve_config(args: list[str]) -> Any:
    """``infer serve ARGS`` as the CLI reads them: its parser, then the ServerConfig it builds."""
    from infer.cli import build_parser
    from infer.config.server import ServerConfig

    parsed = build_parser().parse_args(["serve", *args])
    assert parsed.command == "serve"
    return ServerConfig(**{k: v for k, v in vars(parsed).items() if k in ServerConfig.model_fields})


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "deployment", _container(_one("Deployment")["spec"]["template"]["spec"])
    yield "servingruntime", _container(_one("ServingRuntime", KSERVE)["spec"])


@pytest.mark.parametrize("where", ["deployment", "servingruntime"])
def test_container_args_are_infer_serve_flags(where: str) -> None:
    container = dict(_containers())[where]
    assert "command" not in container, "the image's ENTRYPOINT (infer serve) must stay"
    cfg = _serve_config(container["args"])
    ports = {p["containerPort"] for p in container["ports"]}
    assert cfg.grpc_port in ports
    if where == "deployment":
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "grpc": cfg.grpc_port, "metrics": cfg.metrics_port}
        assert cfg.registry_url == "$(INFER_REGISTRY_URL)"  # expanded by Kubernetes from env
        assert "INFER_REGISTRY_URL" in {e["name"] for e in container["env"]}
    else:
        assert cfg.model_repository == Path("/mnt/models")  # where KServe's storage initializer puts storageUri


@pytest.mark.parametrize("where", ["deployment", "servingruntime"])
def test_written_paths_are_on_writable_volumes(where: str) -> None:
    container = dict(_containers())[where]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [Path(m["mountPath"]) for m in container["volumeMounts"] if not m.get("readOnly")]
    cfg = _serve_config(container["args"])
    written = [p for p in (cfg.registry_dir, cfg.state_dir, Path("/tmp")) if p is not None]
    for path in written:
        assert any(path == m or m in path.parents for m in mounts), f"{path} is on the read-only root filesystem"


@pytest.mark.parametrize("where", ["deployment", "servingruntime"])
def test_probes_ask_the_server_s_health_services(where: str) -> None:
    container = dict(_containers())[where]
    cfg = _serve_config(container["args"])
    services = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        grpc_action = container[probe]["grpc"]
        assert grpc_action["port"] == cfg.grpc_port, probe
        services[probe] = grpc_action["service"]
    # '' is liveness (SERVING also while models load), 'ready' is readiness (every model loaded)
    assert services == {"startupProbe": "ready", "livenessProbe": "", "readinessProbe": "ready"}


class _Registry:
    """The three registry calls readiness makes, for a repository whose models load (or not)."""

    def __init__(self) -> None:
        self.loaded = False

    def all_ready(self) -> bool:
        return self.loaded

    def index(self, ready_only: bool = False) -> list[Any]:
        return []

    def ready(self, name: str, version: str = "") -> bool:
        return self.loaded


async def test_health_services_as_the_probes_see_them() -> None:
    """The services the manifests probe exist, and follow app.py's start and stop order: liveness SERVING from the
    first refresh on; readiness NOT_SERVING while models load, SERVING once started, NOT_SERVING from SIGTERM on."""
    from grpc_health.v1 import health_pb2

    from infer.dataplane.service import DataPlane
    from infer.transport.grpc.server import HealthPublisher

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    registry = _Registry()
    dp = DataPlane(cast(Any, registry), dispatcher=cast(Any, None))  # readiness needs neither the dispatcher
    health = HealthPublisher(dp)

    class Context:
        async def abort(self, code: Any, details: str = "") -> None:
            raise LookupError(f"{code}: service not published")

    async def status(service: str) -> int:
        resp = await health.servicer.Check(health_pb2.HealthCheckRequest(service=service), Context())
        return int(resp.status)

    async def statuses() -> dict[str, int]:
        return {s: await status(s) for s in ("", "ready")}

    await health.refresh()  # listening, models loading
    assert await statuses() == {"": serving, "ready": not_serving}
    registry.loaded = True
    await health.refresh()  # loaded, but start() not finished
    assert await statuses() == {"": serving, "ready": not_serving}
    dp.started = True
    await health.refresh()
    assert await statuses() == {"": serving, "ready": serving}
    dp.stopping = True  # App.stop(): the data plane refuses new requests, then the health servicer shuts down
    await health.shutdown()
    await health.refresh()  # a refresh racing the shutdown changes nothing
    assert await statuses() == {"": not_serving, "ready": not_serving}


def _exported_samples() -> dict[str, str]:
    """Sample name -> metric type of everything /metrics exports for one model version."""
    from infer.observability.metrics import Metrics

    metrics = Metrics()
    metrics.version("anomaly", "1")
    return {s.name: family.type for family in metrics.registry.collect() for s in family.samples}


def test_the_hpa_scales_on_a_metric_the_server_exports() -> None:
    (metric,) = _one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    hpa_name = metric["pods"]["metric"]["name"]
    assert metric["pods"]["target"]["type"] == "AverageValue"

    values = _docs(K8S / "prometheus-adapter-values.yaml")[0]
    (rule,) = values["rules"]["custom"]
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
    assert series is not None
    exported = _exported_samples()
    assert exported.get(series.group(0)) == "gauge", f"{series.group(0)} is not a gauge infer exports"
    assert re.sub(rule["name"]["matches"], rule["name"]["as"], series.group(0)) == hpa_name
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # what a Pods metric is looked up by
    assert hpa_name == "infer_inflight_requests"


# ---------------------------------------------------------------------------------------------- the image


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments), continuation lines joined, comments dropped; in file order."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert m is not None, f"every stage is named: {line}"
            current = stages.setdefault(m.group(2), [])
        current.append((instruction, rest.strip()))
    return stages


def _last(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [rest for ins, rest in stage if ins == instruction]
    assert found, f"no {instruction}"
    return found[-1]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_the_image_runs_infer_as_a_non_root_user(target: str) -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "cpu", "the CPU image is the default target (the last stage)"
    stage = stages[target]
    user, _, group = _last(stage, "USER").partition(":")
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER, so runAsNonRoot can check it"
    assert group.isdigit() and int(group) != 0

    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user)
    assert pod["securityContext"]["runAsGroup"] == int(group)
    container = _container(pod)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    runtime = _container(_one("ServingRuntime", KSERVE)["spec"])
    assert runtime["securityContext"]["runAsUser"] == int(user)

    assert json.loads(_last(stage, "ENTRYPOINT")) == ["infer", "serve"]
    _serve_config(json.loads(_last(stage, "CMD")))
    healthcheck = _last(stage, "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--start-period" in options
    argv = json.loads(command)
    assert argv[:2] == ["infer", "probe"] and "--service" in argv and argv[argv.index("--service") + 1] == "ready"
    from infer.cli import build_parser

    assert build_parser().parse_args(argv[1:]).service == "ready"


def test_the_gpu_image_installs_the_gpu_extras() -> None:
    stage = _dockerfile_stages()["gpu"]
    header = (ROOT / "Dockerfile").read_text().split("\nFROM ", 1)[0]
    cuda = re.search(r"^ARG CUDA_IMAGE=(\S+)$", header, re.MULTILINE)
    assert stage[0][1].split()[0] == "${CUDA_IMAGE}" and cuda is not None
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", cuda.group(1)), cuda.group(1)
    assert 'GPU_EXTRAS="gpu,tensorrt"' in [rest for ins, rest in stage if ins == "ARG"]
    runs = " ".join(rest for ins, rest in stage if ins == "RUN")
    assert "${GPU_EXTRAS}" in runs and "onnxruntime-gpu==" in runs
    installs = [part for part in runs.split("&&") if re.search(r"\bpip install\b", part)]
    assert installs and all("--no-cache-dir" in part for part in installs)


# ---------------------------------------------------------------------------------------------- kustomize, KServe


def test_the_kustomization_applies_every_manifest_beside_it() -> None:
    kustomization = _docs(K8S / "kustomization.yaml")[0]
    objects = {p.name for p in K8S.glob("*.yaml")
               if p.name not in {"kustomization.yaml", "prometheus-adapter-values.yaml"}
               and not p.name.endswith(".example.yaml")}
    assert set(kustomization["resources"]) == objects
    assert [i["name"] for i in kustomization["images"]] == [
        _container(_one("Deployment")["spec"]["template"]["spec"])["image"].split(":")[0]]


def test_the_registry_url_and_password_come_from_the_config_map_and_secret() -> None:
    env = {e["name"]: e for e in _container(_one("Deployment")["spec"]["template"]["spec"])["env"]}
    url_ref = env["INFER_REGISTRY_URL"]["valueFrom"]["configMapKeyRef"]
    config_map = _one("ConfigMap")
    assert url_ref["name"] == config_map["metadata"]["name"]
    url = config_map["data"][url_ref["key"]]
    assert url.startswith("postgresql://") and "@" in url and ":" not in url.split("://", 1)[1].split("@")[0], \
        "the URL names the user, never the password"
    password_ref = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = _docs(K8S / "registry-secret.example.yaml")[0]
    assert password_ref["name"] == secret["metadata"]["name"] and password_ref["key"] in secret["stringData"]


def test_the_inference_service_uses_the_serving_runtime() -> None:
    runtime, isvc = _one("ServingRuntime", KSERVE), _one("InferenceService", KSERVE)
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert runtime["spec"]["protocolVersions"] == ["grpc-v2"], "infer serves no REST inference (KServe's v2)"
    annotations = runtime["spec"]["annotations"]
    cfg = _serve_config(_container(runtime["spec"])["args"])
    assert annotations["prometheus.kserve.io/port"] == str(cfg.metrics_port)


def test_the_validate_script_runs_the_validator() -> None:
    script = (ROOT / "scripts" / "validate_deploy.sh").read_text()
    assert "set -euo pipefail" in script
    assert any(shlex.split(line)[-2:] == ["deploy/validate.py", "$@"] for line in script.splitlines()
               if "deploy/validate.py" in line and not line.lstrip().startswith("#"))
