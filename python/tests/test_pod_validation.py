"""The pods the platform asks Kubernetes for are valid Pod objects for every supported Kubernetes version.

Each pod is rendered as Airflow does before creating it (templates, then `build_pod_request_obj`),
serialized as the API client sends it, and validated in strict mode (no unknown fields) against the
OpenAPI schemas kubernetes-validate ships, from 1.30 to the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from airflow.dag_processing.dagbag import DagBag
from kubernetes_validate.utils import all_versions
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from packaging.version import Version

from conftest import DAGS, POLICY_FILE
from data_platform import CustomerDAGFactory, PlatformPodOperator, PlatformTaskFactory, Snapshot
from data_platform.artifacts import OUTPUTS_XCOM_KEY
from data_platform.operator import MEMORY_LIMIT_KEY
from data_platform.policy import load_policy
from data_platform.sftp_upload import SftpUploadOperator
from rendering import RUN_ID, StateStore, as_manifest, base_container, context_for, env_of, render

GI = 2**30
USER1_SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/jobs/2026-11-26.tar.gz"
USER2_SNAPSHOT = "https://user2data.blob.core.windows.net/snapshots/jobs/2026-11-26.tar.gz"
SHA = "9f" * 32
KUBERNETES_VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version("1.30")}, key=Version)


def test_the_validator_ships_versions_from_1_30_to_the_newest():
    assert KUBERNETES_VERSIONS[0] == "1.30.0"
    assert KUBERNETES_VERSIONS[-1] == kubernetes_validate.latest_version()
    assert len(KUBERNETES_VERSIONS) >= 8


def factory(tenant: str) -> PlatformTaskFactory:
    dag = CustomerDAGFactory.create(f"{tenant}_validation", tenant, "@daily", policy=load_policy(POLICY_FILE))
    return PlatformTaskFactory(dag)


#: Varied pod tasks: (name, builder).
VARIANTS: dict[str, Callable[[], PlatformPodOperator]] = {
    "plain": lambda: factory("user1").aks_python("plain", USER1_SNAPSHOT, "job.py"),
    "secrets": lambda: factory("user1").aks_python(
        "secrets",
        Snapshot(USER1_SNAPSHOT, SHA),
        "job.py",
        args=["--date", "{{ ds }}"],
        secrets={
            "DB_PASSWORD": "user1-kv/db-password",
            "API_KEY": "https://user1-kv.vault.azure.net/secrets/api",
        },
    ),
    "secret_files": lambda: factory("user2").aks_python(
        "secret_files",
        USER2_SNAPSHOT,
        "job.py",
        secret_files={"certs/client.pem": "shared-kv/client-cert/0a1b2c", "token": "user2-kv/token"},
    ),
    "env": lambda: factory("user1").aks_python(
        "env", USER1_SNAPSHOT, "job.py", env={"MODE": "full", "RUN_DATE": "{{ ds }}", "EMPTY": ""}
    ),
    "small": lambda: factory("user2").aks_python("small", USER2_SNAPSHOT, "job.py", size="small"),
    "medium": lambda: factory("user2").aks_python(
        "medium", USER2_SNAPSHOT, "job.py", size="medium", timeout="20m"
    ),
    "large": lambda: factory("user2").aks_python(
        "large", USER2_SNAPSHOT, "job.py", size="large", image="python-ml", timeout="3m10s"
    ),
}


def example_dag_pod_tasks() -> dict[str, PlatformPodOperator]:
    # Discovered as a default DAG processor does (safe mode), so a DAG Airflow would skip fails here.
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert bag.import_errors == {}
    dag = bag.dags["user1_pipeline"]
    pods = {t.task_id: t for t in dag.tasks if isinstance(t, PlatformPodOperator)}
    others = {t.task_id for t in dag.tasks if not isinstance(t, PlatformPodOperator)}
    assert others == {"upload"} and isinstance(dag.get_task("upload"), SftpUploadOperator)
    return pods


@pytest.fixture(scope="module")
def operators() -> dict[str, PlatformPodOperator]:
    found = {f"user1_pipeline.{task_id}": op for task_id, op in example_dag_pod_tasks().items()}
    found.update({name: build() for name, build in VARIANTS.items()})
    return found


#: What validate pushed in the run (transform's input resolves to it when its pod is built).
VALIDATE_OUTPUTS = {
    ("validate", OUTPUTS_XCOM_KEY): [
        {"path": "/data/valid.csv", "kind": "file", "bytes": 40, "files": 1, "sha256": "ab" * 32,
         "uri": "https://user1data.blob.core.windows.net/runs/user1_pipeline/r/validate/-1/1/files/data/valid.csv"}
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def manifests(operators) -> dict[str, dict[str, Any]]:
    return {
        name: as_manifest(render(op, context_for(op, try_number=2, pushed_by_others=VALIDATE_OUTPUTS)))
        for name, op in operators.items()
    }


POD_NAMES = ["user1_pipeline.validate", "user1_pipeline.transform", *VARIANTS]


def test_every_pod_task_of_the_example_dag_is_covered():
    assert {f"user1_pipeline.{task_id}" for task_id in example_dag_pod_tasks()} <= set(POD_NAMES)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", POD_NAMES)
def test_the_pod_is_valid_for_the_kubernetes_version(manifests, name, version):
    manifest = manifests[name]
    assert kubernetes_validate.validate(manifest, version, strict=True) == version.rsplit(".", 1)[0]


def test_strict_validation_catches_an_unknown_field(manifests):
    """The validator does refuse what Kubernetes would: the checks above can fail."""
    broken = {**manifests["plain"], "spec": {**manifests["plain"]["spec"], "activeDeadline": 5}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    wrong_type = {**manifests["plain"], "spec": {**manifests["plain"]["spec"], "activeDeadlineSeconds": "5"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", POD_NAMES)
def test_the_pod_runs_only_the_agent_with_its_clocks_and_no_sidecar(manifests, operators, name):
    manifest, op = manifests[name], operators[name]
    spec = manifest["spec"]
    assert [c["name"] for c in spec["containers"]] == ["base"], "no XCom sidecar, no other container"
    assert not spec.get("initContainers")
    assert all("xcom" not in v["name"] for v in spec.get("volumes", []))
    container = base_container(manifest)
    assert container["command"] == ["/usr/local/bin/task-agent"]
    args = container["args"]
    assert args[0] == "run"
    assert args[args.index("--") + 1] == "python"
    assert not any("{{" in argument for argument in args), "every template is rendered"
    assert args[args.index("--run-id") + 1] == RUN_ID
    assert args[args.index("--try-number") + 1] == "2"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["activeDeadlineSeconds"] == op.active_deadline_seconds > 0
    assert spec["terminationGracePeriodSeconds"] == op.termination_grace_period > 0
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == op.service_account_name
    assert manifest["metadata"]["namespace"] == op.namespace
    labels = manifest["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    assert labels["data-platform.io/tenant"] in ("user1", "user2")
    assert labels["try_number"] == "2"
    env = env_of(container)
    assert env["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["K8S_NAMESPACE_NAME"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["K8S_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "TRACEPARENT" not in env, "no trace context was active"


def test_user_env_templates_are_rendered(manifests):
    env = env_of(base_container(manifests["env"]))
    assert env["RUN_DATE"] == "2026-11-26"
    assert env["MODE"] == "full"


# --- Trace context ----------------------------------------------------------------------------------


def traced_pod(build: Callable[[], PlatformPodOperator], parent: dict[str, str] | None = None):
    """Builds the pod inside a span, as the task runner does around execute(); returns it and the span."""
    op = build()
    context = context_for(op)
    op.render_template_fields(context)
    tracer = TracerProvider().get_tracer("airflow.task")
    with tracer.start_as_current_span("task", context=propagate.extract(parent) if parent else None) as span:
        pod = op.build_pod_request_obj(context, dry_run=True)
    return as_manifest(pod), span.get_span_context()


def traceparent_of(span_context) -> str:
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


@pytest.mark.parametrize("name", ["plain", "secrets"])
def test_the_active_span_is_passed_to_the_agent_as_traceparent(name):
    manifest, span_context = traced_pod(VARIANTS[name])
    env = env_of(base_container(manifest))
    assert env["TRACEPARENT"] == traceparent_of(span_context)
    assert "TRACESTATE" not in env
    kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_trace_state_travels_with_the_parent():
    parent = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "airflow=run1,vendor=x",
    }
    manifest, span_context = traced_pod(VARIANTS["plain"], parent)
    env = env_of(base_container(manifest))
    assert env["TRACEPARENT"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert env["TRACEPARENT"] == traceparent_of(span_context)
    assert env["TRACESTATE"] == "airflow=run1,vendor=x"


def test_without_a_span_the_task_instances_stored_context_is_used():
    op = VARIANTS["plain"]()
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    manifest = as_manifest(render(op, context_for(op, trace_carrier=carrier)))
    assert env_of(base_container(manifest))["TRACEPARENT"] == carrier["traceparent"]


# --- The memory limit after an out-of-memory kill ----------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, "1Gi"),  # no earlier OOM kill
        (3 * GI // 2, "1536Mi"),  # raised by an earlier try
        (3 * GI, "3Gi"),
        (10 * GI, "4Gi"),  # capped at the size class's max_memory
        (GI // 2, "1Gi"),  # never lowered
        ("2Gi", "1Gi"),  # not a byte count: ignored
    ],
)
def test_a_raised_memory_limit_from_an_earlier_try_is_applied_up_to_the_maximum(stored, expected):
    op = VARIANTS["plain"]()
    store = StateStore({} if stored is None else {MEMORY_LIMIT_KEY: stored})
    manifest = as_manifest(render(op, context_for(op, try_number=2, store=store)))
    resources = base_container(manifest)["resources"]
    assert resources["limits"]["memory"] == expected
    assert resources["requests"]["memory"] == "512Mi"
    assert resources["limits"]["cpu"] == "1"
    kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_raise_is_capped_at_the_larger_classs_own_maximum():
    op = VARIANTS["medium"]()
    store = StateStore({MEMORY_LIMIT_KEY: 64 * GI})
    manifest = as_manifest(render(op, context_for(op, store=store)))
    assert base_container(manifest)["resources"]["limits"]["memory"] == "16Gi"


def test_a_raise_for_one_try_does_not_stick_to_the_operator():
    op = VARIANTS["plain"]()
    raised = as_manifest(render(op, context_for(op, store=StateStore({MEMORY_LIMIT_KEY: 2 * GI}))))
    again = as_manifest(render(op, context_for(op, store=StateStore())))
    assert base_container(raised)["resources"]["limits"]["memory"] == "2Gi"
    assert base_container(again)["resources"]["limits"]["memory"] == "1Gi"
    assert op.container_resources.limits["memory"] == "1Gi"


def test_a_sas_in_the_snapshot_url_is_masked_in_the_rendered_fields():
    # The task runner's own serialisation: what the UI's "Rendered Template" view receives.
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    signature = "Zm9vYmFy%2Bc2VjcmV0%3D"
    op = factory("user1").aks_python(
        "sas", f"{USER1_SNAPSHOT}?sv=2025-01-05&sr=b&sp=r&sig={signature}", "job.py"
    )
    manifest = as_manifest(render(op, context_for(op)))
    assert f"sig={signature}" in " ".join(base_container(manifest)["args"]), "the pod itself needs the SAS"
    rendered = str(_serialize_rendered_fields(op))
    assert USER1_SNAPSHOT in rendered
    assert signature not in rendered
    assert "Zm9vYmFy+c2VjcmV0=" not in rendered


# --- Declared paths get a writable volume ------------------------------------------------------------


SEED_DECLARED = {"user1_pipeline.validate": ["/data/valid.csv"],
                 "user1_pipeline.transform": ["/data/out.csv", "/data/valid.csv"]}  # fmt: skip


@pytest.mark.parametrize(("name", "paths"), SEED_DECLARED.items())
def test_the_seeds_pod_mounts_a_writable_volume_at_data(manifests, name, paths):
    """The root file system is read-only: the seed's /data/… outputs and inputs need a volume."""
    manifest = manifests[name]
    spec, container = manifest["spec"], base_container(manifest)
    assert {"name": "declared-data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "declared-data", "emptyDir": {}} in spec["volumes"], "no sizeLimit: the policy sets none"
    assert [m["mountPath"] for m in container["volumeMounts"]].count("/data") == 1, "one for both paths"
    args = container["args"]
    declared = [
        args[i + 1].split("=", 1)[0] for i, word in enumerate(args) if word in ("--output", "--input")
    ]
    assert sorted(declared) == sorted(paths)
    assert kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


def test_a_task_without_declarations_gets_no_extra_volume(manifests):
    assert not manifests["plain"]["spec"].get("volumes")
    assert not base_container(manifests["plain"]).get("volumeMounts")


def test_every_try_gets_the_same_volume_once():
    op = factory("user1").aks_python("twice", USER1_SNAPSHOT, "job.py", outputs=["/data/a.csv", "/data/b"])
    first = as_manifest(render(op, context_for(op)))
    second = as_manifest(render(op, context_for(op, try_number=2)))
    assert (
        first["spec"]["volumes"] == second["spec"]["volumes"] == [{"name": "declared-data", "emptyDir": {}}]
    )
    assert base_container(first)["volumeMounts"] == base_container(second)["volumeMounts"]
    assert op.volumes == [] and op.volume_mounts == [], "added to each pod, not to the operator"
