"""Validate every manifest under deploy/ offline, and exit non-zero on the first broken tree.

- Kubernetes' own kinds (Deployment, Service, HorizontalPodAutoscaler, ConfigMap, Secret, PodDisruptionBudget)
  against the Kubernetes JSON schemas that the ``kubernetes-validate`` package ships (Apache-2.0), in strict mode
  (unknown fields are errors), for the oldest and the newest Kubernetes release in ``KUBERNETES_VERSIONS``.
- Custom resources (ServiceMonitor, PrometheusRule, ServingRuntime, InferenceService) and the Kustomization against
  the schemas in ``deploy/schemas/``, written from the required fields their CRDs document; containers, volumes,
  label selectors and object metadata inside them are checked against the same Kubernetes schemas (``$ref``), and
  the schemas may ``$ref`` each other by their ``$id``.
- Files that are not Kubernetes objects (Helm values, the Prometheus rule file, Grafana provisioning) against the
  schema ``VALUES`` names for them.

A kind with no schema is an error, not a warning. ``scripts/validate_deploy.sh`` runs this;
``tests/unit/test_deploy_manifests.py`` imports :func:`validate_tree`.

    python deploy/validate.py [DIR ...] [--kubernetes-version 1.29 --kubernetes-version 1.37]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
SCHEMAS = DEPLOY / "schemas"
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
# Native gRPC probes went GA in 1.27; 1.29 is the oldest release still commonly run. The newest is whatever the
# installed kubernetes-validate knows (None).
KUBERNETES_VERSIONS: tuple[str | None, ...] = ("1.29", None)
# (apiVersion, kind) -> schema in deploy/schemas, for what kubernetes-validate has no schema for
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization.json",
}
# file name -> schema, for YAML files that are not Kubernetes objects
VALUES = {
    "prometheus-adapter-values.yaml": "prometheus-adapter-values.json",
    "infer-alerts.yaml": "prometheus-rules.json",  # deploy/prometheus: a plain Prometheus rule file
    "infer-prometheus.yaml": "grafana-datasources.json",  # deploy/grafana/provisioning/datasources
    "infer-dashboards.yaml": "grafana-dashboards.json",  # deploy/grafana/provisioning/dashboards
}


def manifest_files(root: Path) -> list[Path]:
    """Every YAML file under ``root`` (the schemas folder aside), sorted."""
    found = [*root.rglob("*.yaml"), *root.rglob("*.yml")]
    return sorted(p for p in found if SCHEMAS not in p.resolve().parents)


def load_documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of ``path``."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _versions(wanted: Iterable[str | None]) -> list[str]:
    """Each wanted ``major.minor`` (None: the newest) as the newest schema release kubernetes-validate has for it."""
    import kubernetes_validate

    known = kubernetes_validate.utils.all_versions()  # "1.29.0", ... in order

    def mm(v: str) -> tuple[int, int]:
        major, minor = v.split(".")[:2]
        return int(major), int(minor)

    out = []
    for v in wanted:
        if v is None:
            out.append(known[-1])
            continue
        fits = [k for k in known if mm(k) <= mm(v)]
        if not fits:
            raise SystemExit(f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {v}")
        out.append(fits[-1])
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=8)
def _custom_validator(schema_name: str, version: str) -> Any:
    """A Draft 2020-12 validator for one deploy/schemas file, its Kubernetes $refs resolved in ``version`` and its
    refs to the other deploy/schemas files by their ``$id``."""
    import jsonschema
    from referencing import Registry, Resource

    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    ours = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMAS.glob("*.json"))]
    registry = Registry().with_resources([(K8S_DEFINITIONS, Resource.from_contents(definitions)),
                                          *((s["$id"], Resource.from_contents(s)) for s in ours)])
    schema = json.loads((SCHEMAS / schema_name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _schema_errors(validator: Any, doc: Any, where: str) -> list[str]:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def validate_document(doc: Any, where: str, versions: Sequence[str]) -> list[str]:
    """Errors of one YAML document (a Kubernetes object, a custom resource or a Kustomization)."""
    import kubernetes_validate

    if not isinstance(doc, dict) or not isinstance(doc.get("apiVersion"), str) or not isinstance(doc.get("kind"), str):
        return [f"{where}: not a Kubernetes object (no apiVersion and kind)"]
    api_kind = (doc["apiVersion"], doc["kind"])
    errors: list[str] = []
    for version in versions:
        at = f"{where} (Kubernetes {version})"
        if api_kind in CUSTOM:
            errors += _schema_errors(_custom_validator(CUSTOM[api_kind], version), doc, at)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{at}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{at}: no schema for {doc['apiVersion']} {doc['kind']} ({e.message})")
    return errors


def _kustomization_errors(path: Path, doc: Any) -> list[str]:
    """Every resource a kustomization names exists beside it."""
    if not isinstance(doc, dict) or doc.get("kind") != "Kustomization":
        return []
    return [f"{path}: resources: {name} does not exist" for name in doc.get("resources") or []
            if isinstance(name, str) and not (path.parent / name).exists()]


def validate_file(path: Path, versions: Sequence[str]) -> list[str]:
    try:
        docs = load_documents(path)
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    if not docs:
        return [f"{path}: no YAML document"]
    if path.name in VALUES:
        return [e for doc in docs for e in _schema_errors(_custom_validator(VALUES[path.name], versions[-1]), doc,
                                                          str(path))]
    errors: list[str] = []
    for i, doc in enumerate(docs):
        where = f"{path}[{i}]" if len(docs) > 1 else str(path)
        errors += validate_document(doc, where, versions)
        errors += _kustomization_errors(path, doc)
    return errors


def validate_tree(root: Path = DEPLOY, kubernetes_versions: Iterable[str | None] = KUBERNETES_VERSIONS) -> list[str]:
    """Errors of every manifest under ``root``; empty when all are valid."""
    versions = _versions(kubernetes_versions)
    files = manifest_files(root)
    if not files:
        return [f"{root}: no YAML files"]
    return [e for path in files for e in validate_file(path, versions)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("roots", nargs="*", type=Path, default=[DEPLOY], help="folders to validate (default: deploy/)")
    p.add_argument("--kubernetes-version", action="append", dest="versions",
                   help="major.minor, repeatable (default: 1.29 and the newest kubernetes-validate knows)")
    a = p.parse_args(argv)
    try:
        import kubernetes_validate
    except ImportError:
        print("validate_deploy: kubernetes-validate is not installed (pip install kubernetes-validate)",
              file=sys.stderr)
        return 2
    versions: list[str | None] = list(a.versions) if a.versions else list(KUBERNETES_VERSIONS)
    errors = [e for root in a.roots for e in validate_tree(root, versions)]
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    checked = sum(len(manifest_files(root)) for root in a.roots)
    known = ", ".join(_versions(versions))
    print(f"validate_deploy: {checked} files, Kubernetes {known} (kubernetes-validate "
          f"{kubernetes_validate.__version__}): {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
