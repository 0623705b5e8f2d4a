from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GroundTruthRequest(_message.Message):
    __slots__ = ("request_id", "labels", "values")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class GroundTruthResponse(_message.Message):
    __slots__ = ("model", "version", "rows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    rows: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class ModelPerformanceRequest(_message.Message):
    __slots__ = ("model", "version", "window_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    window_s: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., window_s: _Optional[float] = ...) -> None: ...

class PerformancePoint(_message.Message):
    __slots__ = ("t", "value")
    T_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    t: float
    value: float
    def __init__(self, t: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class ModelPerformance(_message.Message):
    __slots__ = ("model", "version", "kind", "samples", "accuracy", "precision", "recall", "f1", "mae", "rmse", "series")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    kind: str
    samples: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    mae: float
    rmse: float
    series: _containers.RepeatedCompositeFieldContainer[PerformancePoint]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., samples: _Optional[int] = ..., accuracy: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., mae: _Optional[float] = ..., rmse: _Optional[float] = ..., series: _Optional[_Iterable[_Union[PerformancePoint, _Mapping]]] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "kind", "psi", "ks", "ks_p", "wasserstein", "chi2", "chi2_p", "drifted")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    KS_P_FIELD_NUMBER: _ClassVar[int]
    WASSERSTEIN_FIELD_NUMBER: _ClassVar[int]
    CHI2_FIELD_NUMBER: _ClassVar[int]
    CHI2_P_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: str
    psi: float
    ks: float
    ks_p: float
    wasserstein: float
    chi2: float
    chi2_p: float
    drifted: bool
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[str] = ..., psi: _Optional[float] = ..., ks: _Optional[float] = ..., ks_p: _Optional[float] = ..., wasserstein: _Optional[float] = ..., chi2: _Optional[float] = ..., chi2_p: _Optional[float] = ..., drifted: _Optional[bool] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("model", "version", "drifted", "evaluated_at", "rows", "reason", "features")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    drifted: bool
    evaluated_at: float
    rows: int
    reason: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., drifted: _Optional[bool] = ..., evaluated_at: _Optional[float] = ..., rows: _Optional[int] = ..., reason: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ...) -> None: ...

class OutcomeRequest(_message.Message):
    __slots__ = ("request_id", "value")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    value: float
    def __init__(self, request_id: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class OutcomeResponse(_message.Message):
    __slots__ = ("deployment", "target")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    target: str
    def __init__(self, deployment: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class VariantReport(_message.Message):
    __slots__ = ("target", "requests", "errors", "error_rate", "mean_latency_ms", "outcomes", "outcome_mean")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_MEAN_FIELD_NUMBER: _ClassVar[int]
    target: str
    requests: int
    errors: int
    error_rate: float
    mean_latency_ms: float
    outcomes: int
    outcome_mean: float
    def __init__(self, target: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., mean_latency_ms: _Optional[float] = ..., outcomes: _Optional[int] = ..., outcome_mean: _Optional[float] = ...) -> None: ...

class ExperimentReport(_message.Message):
    __slots__ = ("deployment", "variants", "metric", "difference", "ci95_low", "ci95_high", "p_value")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CI95_LOW_FIELD_NUMBER: _ClassVar[int]
    CI95_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantReport]
    metric: str
    difference: float
    ci95_low: float
    ci95_high: float
    p_value: float
    def __init__(self, deployment: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantReport, _Mapping]]] = ..., metric: _Optional[str] = ..., difference: _Optional[float] = ..., ci95_low: _Optional[float] = ..., ci95_high: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("target", "weight")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    target: Target
    weight: float
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "variants", "sticky_key", "fallback", "link_timeout_us", "shadow", "shadow_tolerance", "shadow_stats", "canary", "promote_when_p_below", "promote_min_samples", "revision", "default_answer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    STICKY_KEY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    LINK_TIMEOUT_US_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    SHADOW_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_STATS_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_WHEN_P_BELOW_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ANSWER_FIELD_NUMBER: _ClassVar[int]
    name: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    sticky_key: str
    fallback: _containers.RepeatedCompositeFieldContainer[Target]
    link_timeout_us: int
    shadow: Target
    shadow_tolerance: float
    shadow_stats: ShadowStats
    canary: Canary
    promote_when_p_below: float
    promote_min_samples: int
    revision: int
    default_answer: DefaultAnswer
    def __init__(self, name: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., sticky_key: _Optional[str] = ..., fallback: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., link_timeout_us: _Optional[int] = ..., shadow: _Optional[_Union[Target, _Mapping]] = ..., shadow_tolerance: _Optional[float] = ..., shadow_stats: _Optional[_Union[ShadowStats, _Mapping]] = ..., canary: _Optional[_Union[Canary, _Mapping]] = ..., promote_when_p_below: _Optional[float] = ..., promote_min_samples: _Optional[int] = ..., revision: _Optional[int] = ..., default_answer: _Optional[_Union[DefaultAnswer, _Mapping]] = ...) -> None: ...

class DefaultOutput(_message.Message):
    __slots__ = ("name", "datatype", "shape", "numbers", "strings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    numbers: _containers.RepeatedScalarFieldContainer[float]
    strings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., numbers: _Optional[_Iterable[float]] = ..., strings: _Optional[_Iterable[str]] = ...) -> None: ...

class DefaultAnswer(_message.Message):
    __slots__ = ("outputs", "unbatched")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    UNBATCHED_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[DefaultOutput]
    unbatched: bool
    def __init__(self, outputs: _Optional[_Iterable[_Union[DefaultOutput, _Mapping]]] = ..., unbatched: _Optional[bool] = ...) -> None: ...

class CanaryStage(_message.Message):
    __slots__ = ("percent", "duration_s")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    percent: float
    duration_s: float
    def __init__(self, percent: _Optional[float] = ..., duration_s: _Optional[float] = ...) -> None: ...

class Canary(_message.Message):
    __slots__ = ("baseline", "canary", "stages", "max_error_rate", "max_p99_ms", "min_requests", "status", "stage", "reason")
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    baseline: Target
    canary: Target
    stages: _containers.RepeatedCompositeFieldContainer[CanaryStage]
    max_error_rate: float
    max_p99_ms: float
    min_requests: int
    status: str
    stage: int
    reason: str
    def __init__(self, baseline: _Optional[_Union[Target, _Mapping]] = ..., canary: _Optional[_Union[Target, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[CanaryStage, _Mapping]]] = ..., max_error_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., min_requests: _Optional[int] = ..., status: _Optional[str] = ..., stage: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("compared", "matched", "mismatched", "errors", "skipped", "max_abs_diff")
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    compared: int
    matched: int
    mismatched: int
    errors: int
    skipped: int
    max_abs_diff: float
    def __init__(self, compared: _Optional[int] = ..., matched: _Optional[int] = ..., mismatched: _Optional[int] = ..., errors: _Optional[int] = ..., skipped: _Optional[int] = ..., max_abs_diff: _Optional[float] = ...) -> None: ...

class DeploymentRef(_message.Message):
    __slots__ = ("name", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: int
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_id", "version", "model_type", "framework", "trained_at", "training_data_id", "training_data_size", "hyperparameters", "metrics", "artifact_uri", "artifact_sha256", "status", "parent_version", "training_run", "created_at")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_SIZE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_RUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    model_type: str
    framework: str
    trained_at: float
    training_data_id: str
    training_data_size: int
    hyperparameters: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    artifact_uri: str
    artifact_sha256: str
    status: str
    parent_version: str
    training_run: str
    created_at: float
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., model_type: _Optional[str] = ..., framework: _Optional[str] = ..., trained_at: _Optional[float] = ..., training_data_id: _Optional[str] = ..., training_data_size: _Optional[int] = ..., hyperparameters: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., artifact_uri: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., status: _Optional[str] = ..., parent_version: _Optional[str] = ..., training_run: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class RegisterVersionRequest(_message.Message):
    __slots__ = ("version", "content", "path", "artifact_name", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: ModelVersion
    content: bytes
    path: str
    artifact_name: str
    reason: str
    def __init__(self, version: _Optional[_Union[ModelVersion, _Mapping]] = ..., content: _Optional[bytes] = ..., path: _Optional[str] = ..., artifact_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VersionRef(_message.Message):
    __slots__ = ("model_id", "version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("model_id", "status", "model_type", "framework", "metric", "op", "value")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    status: str
    model_type: str
    framework: str
    metric: str
    op: str
    value: float
    def __init__(self, model_id: _Optional[str] = ..., status: _Optional[str] = ..., model_type: _Optional[str] = ..., framework: _Optional[str] = ..., metric: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class CompareVersionsRequest(_message.Message):
    __slots__ = ("model_id", "version_a", "version_b")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_A_FIELD_NUMBER: _ClassVar[int]
    VERSION_B_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version_a: str
    version_b: str
    def __init__(self, model_id: _Optional[str] = ..., version_a: _Optional[str] = ..., version_b: _Optional[str] = ...) -> None: ...

class FieldDifference(_message.Message):
    __slots__ = ("field", "a", "b")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    field: str
    a: str
    b: str
    def __init__(self, field: _Optional[str] = ..., a: _Optional[str] = ..., b: _Optional[str] = ...) -> None: ...

class MetricDifference(_message.Message):
    __slots__ = ("name", "a", "b", "delta", "has_a", "has_b")
    NAME_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    HAS_A_FIELD_NUMBER: _ClassVar[int]
    HAS_B_FIELD_NUMBER: _ClassVar[int]
    name: str
    a: float
    b: float
    delta: float
    has_a: bool
    has_b: bool
    def __init__(self, name: _Optional[str] = ..., a: _Optional[float] = ..., b: _Optional[float] = ..., delta: _Optional[float] = ..., has_a: _Optional[bool] = ..., has_b: _Optional[bool] = ...) -> None: ...

class CompareVersionsResponse(_message.Message):
    __slots__ = ("fields", "metrics")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[FieldDifference]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricDifference]
    def __init__(self, fields: _Optional[_Iterable[_Union[FieldDifference, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[MetricDifference, _Mapping]]] = ...) -> None: ...

class TransitionRequest(_message.Message):
    __slots__ = ("model_id", "version", "source", "target", "reason")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    source: str
    target: str
    reason: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("at", "source", "target", "reason", "actor")
    AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    at: float
    source: str
    target: str
    reason: str
    actor: str
    def __init__(self, at: _Optional[float] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class VersionHistoryResponse(_message.Message):
    __slots__ = ("transitions",)
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[Transition]
    def __init__(self, transitions: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ...) -> None: ...

class AuditLogRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at", "actor", "action", "detail_json")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    at: float
    actor: str
    action: str
    detail_json: str
    def __init__(self, at: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class AuditLogResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class ServingHistoryRequest(_message.Message):
    __slots__ = ("model", "version", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    limit: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ServingTransition(_message.Message):
    __slots__ = ("model", "version", "at", "source", "target", "reason", "server")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    at: float
    source: str
    target: str
    reason: str
    server: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., at: _Optional[float] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ..., server: _Optional[str] = ...) -> None: ...

class ServingHistoryResponse(_message.Message):
    __slots__ = ("transitions",)
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[ServingTransition]
    def __init__(self, transitions: _Optional[_Iterable[_Union[ServingTransition, _Mapping]]] = ...) -> None: ...
