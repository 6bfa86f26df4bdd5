"""The Helm chart (charts/data-platform) and the Dockerfiles (docker/), with the real tools.

helm and hadolint come from scripts/install-chart-tools. The chart is rendered with
`helm template` and every document is validated in strict mode for Kubernetes 1.30 to the
newest; bad values must fail `helm lint --strict` and `helm template` naming the field; the
rendered policy must be read by both halves (data_platform.policy and the real task-agent);
and the pod the Airflow side builds on the chart's pod template must still be a valid,
hardened pod.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import ApiClient
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from chart_helpers import (
    AIRFLOW_NAMESPACE,
    CHART,
    DOCKER,
    EXAMPLE_VALUES,
    container,
    dockerfile_instructions,
    env_names,
    find,
    helm_lint,
    helm_template,
    one,
    pod_template,
    policy_text,
    render,
    restricted_violations,
    run,
    stages,
    tool,
)
from conftest import POLICY_FILE, REPO
from data_platform import CustomerDAGFactory, PlatformPodOperator, PlatformTaskFactory, Snapshot
from data_platform.policy import PlatformPolicy, load_policy, parse_policy
from data_platform.units import parse_quantity
from rendering import as_manifest, base_container, context_for
from rendering import render as render_pod

KUBERNETES_VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version("1.30")}, key=Version)
TENANTS = {"user1": "tenant-user1", "user2": "tenant-user2", "user3": "analytics-user3"}
AGENT_IMAGE = "ghcr.io/data-platform/task-agent:0.1.0"
#: Values beside the example that change what the templates render.
VARIANTS: dict[str, dict[str, str]] = {
    "example": {},
    "init-container": {"agent.delivery": "initContainer"},
    "host-path-cache": {"snapshotCache.type": "hostPath", "podSecurity.enforce": "privileged"},
    "no-cache-no-telemetry": {"snapshotCache.type": "none", "telemetry.endpoint": ""},
    "existing-namespaces": {
        "tenantDefaults.createNamespace": "false",
        "tenantDefaults.resourceQuota.enabled": "false",
        "tenantDefaults.limitRange.enabled": "false",
        "tenantDefaults.networkPolicy.enabled": "false",
    },
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(sets=sets) for name, sets in VARIANTS.items()}


@pytest.fixture(scope="module")
def docs(rendered) -> list[dict[str, Any]]:
    return rendered["example"]


# --- The tools ----------------------------------------------------------------------------------------


def test_helm_is_the_pinned_real_helm():
    result = run([tool("helm"), "version", "--template", "{{ .Version }}"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v4.3.1"


def test_the_validator_ships_versions_from_1_30_to_the_newest():
    assert KUBERNETES_VERSIONS[0] == "1.30.0"
    assert KUBERNETES_VERSIONS[-1] == kubernetes_validate.latest_version()


# --- helm lint and the rendered documents ----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_passes_with_the_example(variant):
    result = helm_lint([EXAMPLE_VALUES], VARIANTS[variant])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_strict_passes_with_the_defaults_alone():
    result = helm_lint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_defaults_render_the_airflow_side_only():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render(values=()))
    assert kinds == [("ConfigMap", "data-platform-pod-template"), ("ConfigMap", "data-platform-policy")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_document_is_valid_for_the_kubernetes_version(rendered, variant, version):
    documents = [*rendered[variant], pod_template(rendered[variant])]
    for document in documents:
        where = (
            f"{document['kind']} {document['metadata'].get('namespace')}/{document['metadata'].get('name')}"
        )
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{variant}: {where} is not valid for Kubernetes {version}: {error}")


def test_strict_validation_catches_an_unknown_field(docs):
    """The validator refuses what the API server would: the checks above can fail."""
    quota = find(docs, "ResourceQuota")[0]
    broken = {**quota, "spec": {**quota["spec"], "hardLimits": {"pods": "1"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_tenant_gets_its_objects_in_its_namespace(docs):
    expected = {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "LimitRange",
                "NetworkPolicy", "ConfigMap"}  # fmt: skip
    for tenant, namespace in TENANTS.items():
        assert {d["metadata"]["name"] for d in find(docs, "Namespace")} >= {namespace}
        kinds = {d["kind"] for d in docs if d["metadata"].get("namespace") == namespace}
        assert kinds == expected - {"Namespace"}, tenant
    airflow = {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["metadata"].get("namespace") == AIRFLOW_NAMESPACE
    }
    assert airflow == {("ConfigMap", "data-platform-pod-template"), ("ConfigMap", "data-platform-policy"),
                       ("ConfigMap", "data-platform-artifact-lifecycle")}  # fmt: skip
    assert len(docs) == 3 + 8 * len(TENANTS), "nothing else is rendered"


def test_namespaces_enforce_pod_security_restricted_and_survive_an_uninstall(docs):
    for namespace in find(docs, "Namespace"):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["data-platform.io/tenant"] in TENANTS
        assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_existing_namespaces_are_not_created(rendered):
    documents = rendered["existing-namespaces"]
    assert not find(documents, "Namespace")
    assert not find(documents, "ResourceQuota") and not find(documents, "LimitRange")
    assert not find(documents, "NetworkPolicy")
    assert len(find(documents, "ServiceAccount")) == len(TENANTS)


def test_service_accounts_carry_the_workload_identity(docs):
    accounts = {d["metadata"]["namespace"]: d for d in find(docs, "ServiceAccount")}
    assert set(accounts) == set(TENANTS.values())
    user1 = accounts["tenant-user1"]
    assert user1["metadata"]["name"] == "user1-tasks"
    assert user1["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-1111-4111-8111-111111111111"
    }
    assert user1["automountServiceAccountToken"] is False
    user2 = accounts["tenant-user2"]["metadata"]["annotations"]
    assert user2["azure.workload.identity/tenant-id"] == "99999999-9999-4999-8999-999999999999"
    assert accounts["analytics-user3"]["metadata"]["name"] == "user3-tasks", "the default name"


def test_airflow_may_run_pods_in_tenant_namespaces_and_nothing_more(docs):
    for namespace in TENANTS.values():
        role = one(docs, "Role", namespace)
        rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
        assert rules == {
            (("",), ("pods",)): {"create", "get", "list", "watch", "delete", "patch"},
            (("",), ("pods/log",)): {"get"},
            (("",), ("events",)): {"list", "watch"},
        }, "no pods/exec (only the XCom sidecar needs it), no secrets, no wildcards"
        binding = one(docs, "RoleBinding", namespace)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": AIRFLOW_NAMESPACE},
            {"kind": "ServiceAccount", "name": "airflow-triggerer", "namespace": AIRFLOW_NAMESPACE},
        ]


def egress_ports(policy: dict[str, Any]) -> list[tuple[tuple[Any, ...], ...]]:
    return [tuple((p["protocol"], p["port"]) for p in rule["ports"]) for rule in policy["spec"]["egress"]]


def test_network_policy_denies_ingress_and_allows_only_dns_https_and_the_collector(docs):
    for tenant, namespace in TENANTS.items():
        policy = one(docs, "NetworkPolicy", namespace)["spec"]
        assert policy["podSelector"] == {}, "every pod of the namespace"
        assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["ingress"] == []
        dns, https, collector, *extra = policy["egress"]
        assert dns["to"] == [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }]  # fmt: skip
        assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        assert https == {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        }
        assert collector["ports"] == [{"protocol": "TCP", "port": 4318}]
        assert collector["to"][0]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "observability"}
        }
        if tenant == "user3":
            assert extra == [{"to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}],
                              "ports": [{"protocol": "TCP", "port": 5432}]}]  # fmt: skip
        else:
            assert extra == []


def test_without_telemetry_there_is_no_collector_rule_and_no_endpoint(rendered):
    documents = rendered["no-cache-no-telemetry"]
    for policy in find(documents, "NetworkPolicy"):
        assert [p for ports in egress_ports(policy)[:2] for _, p in ports] == [53, 53, 443]
        assert all(4318 not in [p for _, p in ports] for ports in egress_ports(policy))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_names(container(pod_template(documents)))


def test_quotas_and_limit_ranges_admit_every_size_class_a_tenant_may_use(docs):
    """An out-of-memory retry raises the limit up to max_memory: the LimitRange must allow it."""
    policy = parse_policy(yaml.safe_load(policy_text(docs, AIRFLOW_NAMESPACE)), "rendered")
    for tenant in policy.tenants.values():
        limits = one(docs, "LimitRange", tenant.namespace)["spec"]["limits"][0]
        hard = one(docs, "ResourceQuota", tenant.namespace)["spec"]["hard"]
        for size in (policy.size_classes[name] for name in tenant.size_classes):
            assert parse_quantity(size.max_memory, "") <= parse_quantity(limits["max"]["memory"], ""), size
            assert parse_quantity(size.cpu_limit, "") <= parse_quantity(limits["max"]["cpu"], ""), size
            assert parse_quantity(size.max_memory, "") <= parse_quantity(hard["limits.memory"], ""), size
            assert parse_quantity(size.cpu_limit, "") <= parse_quantity(hard["limits.cpu"], ""), size
        # The quota counts ephemeral storage, which the operator does not set: the LimitRange does.
        assert "ephemeral-storage" in limits["default"] and "ephemeral-storage" in limits["defaultRequest"]


def test_a_minimal_tenant_gets_the_defaults(agent_binary, tmp_path):
    documents = render(
        values=(),
        sets={"tenants.minimal.serviceAccount.clientId": UUID, "tenants.other.serviceAccount.clientId": UUID,
              "tenants.other.createNamespace": "false", "tenants.other.networkPolicy.enabled": "false"},
    )  # fmt: skip
    assert [d["metadata"]["name"] for d in find(documents, "Namespace")] == ["tenant-minimal"]
    assert one(documents, "ServiceAccount", "tenant-minimal")["metadata"]["name"] == "minimal-tasks"
    assert find(documents, "NetworkPolicy", "tenant-minimal")
    assert not find(documents, "NetworkPolicy", "tenant-other"), "a tenant's false wins over the default"
    policy = parsed(documents, "tenant-minimal")
    tenant = policy.tenants["minimal"]
    assert (tenant.namespace, tenant.service_account) == ("tenant-minimal", "minimal-tasks")
    assert tenant.allowed_vaults == () and tenant.storage == ()
    path = tmp_path / "platform-policy.yaml"
    path.write_text(policy_text(documents, "tenant-minimal"))
    code, record = run_agent(agent_binary, tmp_path, path, "minimal", "--secret", "X=any-kv/a", "--", "true")
    assert (code, record["error"]["kind"]) == (77, "policy_denied"), "no vault unless one is listed"


def test_a_tenant_overrides_one_default_and_keeps_the_others(docs):
    hard = one(docs, "ResourceQuota", "analytics-user3")["spec"]["hard"]
    assert hard["pods"] == "10" and hard["limits.cpu"] == "8"
    assert hard["limits.memory"] == "128Gi", "not overridden: the default"


# --- The pod template --------------------------------------------------------------------------------

HARDENED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_the_pod_template_is_hardened(docs):
    pod = pod_template(docs)
    assert pod["kind"] == "Pod" and "namespace" not in pod["metadata"] and "name" not in pod["metadata"]
    spec = pod["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert [c["name"] for c in spec["containers"]] == ["base"], "the operator merges onto the first"
    base = container(pod)
    assert base["securityContext"] == HARDENED_CONTAINER
    assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert base["terminationMessagePath"] == "/dev/termination-log"
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "base"
    assert restricted_violations(pod) == []


def test_the_pod_template_gives_the_agent_its_volumes_and_settings(docs):
    pod = pod_template(docs)
    base = container(pod)
    mounts = {m["mountPath"]: m for m in base["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(mounts) == {"/workspace", "/tmp", "/run/secrets", "/airflow/xcom", "/etc/data-platform",
                           "/var/cache/task-agent"}  # fmt: skip
    for mount in mounts.values():
        assert mount["name"] in volumes
        assert mount.get("readOnly", False) is (mount["mountPath"] == "/etc/data-platform")
    assert volumes["secrets"]["emptyDir"]["medium"] == "Memory", "secrets never touch the node's disk"
    assert volumes["platform-policy"]["configMap"]["name"] == "data-platform-policy"
    for name in ("workspace", "tmp", "return-value", "snapshot-cache"):
        assert "sizeLimit" in volumes[name]["emptyDir"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in base["env"]}
    assert env["TASK_AGENT_RESULT_FILE"] == "/dev/termination-log"
    assert env["TASK_AGENT_WORKDIR"] == "/workspace"
    assert env["TASK_AGENT_RETURN_FILE"] == "/airflow/xcom/return.json"
    assert env["TASK_AGENT_SECRETS_DIR"] == "/run/secrets"
    assert env["TASK_AGENT_CACHE_DIR"] == "/var/cache/task-agent"
    assert env["TASK_AGENT_POLICY_FILE"] == "/etc/data-platform/platform-policy.yaml"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc.cluster.local:4318"
    assert env["HOME"] == "/tmp"
    assert env["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["K8S_NAMESPACE_NAME"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["K8S_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert len(env) == len(base["env"]), "no variable twice"


def test_image_delivery_runs_the_agent_the_runtime_image_carries(docs):
    pod = pod_template(docs)
    assert "initContainers" not in pod["spec"]
    assert container(pod)["command"] == ["/usr/local/bin/task-agent"]
    policy = yaml.safe_load(policy_text(docs, AIRFLOW_NAMESPACE))
    assert policy["platform"]["agent_path"] == "/usr/local/bin/task-agent"


def test_init_container_delivery_installs_the_agent_into_a_read_only_volume(rendered):
    documents = rendered["init-container"]
    pod = pod_template(documents)
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == AGENT_IMAGE
    assert init["command"] == ["/usr/local/bin/task-agent"]
    assert init["args"] == ["install", "/opt/task-agent"]
    assert init["securityContext"] == HARDENED_CONTAINER
    assert init["resources"]["limits"] and init["resources"]["requests"], "counted by the quota"
    assert init["volumeMounts"] == [{"name": "task-agent", "mountPath": "/opt/task-agent"}]
    base = container(pod)
    assert {"name": "task-agent", "mountPath": "/opt/task-agent", "readOnly": True} in base["volumeMounts"]
    assert base["command"] == ["/opt/task-agent/task-agent"]
    assert {"name": "task-agent", "emptyDir": {"sizeLimit": "64Mi"}} in pod["spec"]["volumes"]
    for namespace in [AIRFLOW_NAMESPACE, *TENANTS.values()]:
        policy = yaml.safe_load(policy_text(documents, namespace))
        assert policy["platform"]["agent_path"] == "/opt/task-agent/task-agent", namespace
    assert restricted_violations(pod) == []


def test_an_agent_image_digest_wins_over_the_tag():
    digest = "sha256:" + "ab" * 32
    documents = render(sets={"agent.delivery": "initContainer", "agent.image.digest": digest})
    (init,) = pod_template(documents)["spec"]["initContainers"]
    assert init["image"] == f"ghcr.io/data-platform/task-agent@{digest}"


def test_a_host_path_cache_is_per_node_and_per_tenant_namespace(rendered):
    pod = pod_template(rendered["host-path-cache"])
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "snapshot-cache")
    assert volume == {
        "name": "snapshot-cache",
        "hostPath": {"path": "/var/lib/data-platform/snapshot-cache", "type": "DirectoryOrCreate"},
    }
    mount = next(m for m in container(pod)["volumeMounts"] if m["name"] == "snapshot-cache")
    assert mount["subPathExpr"] == "$(K8S_NAMESPACE_NAME)", "tenants never share cached snapshots"
    assert "K8S_NAMESPACE_NAME" in env_names(container(pod))
    assert restricted_violations(pod) == ["volume snapshot-cache is {'hostPath'}"]
    labels = find(rendered["host-path-cache"], "Namespace")[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_without_a_cache_there_is_no_cache_volume_or_setting(rendered):
    pod = pod_template(rendered["no-cache-no-telemetry"])
    assert "snapshot-cache" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert "TASK_AGENT_CACHE_DIR" not in env_names(container(pod))


def test_scheduling_and_extra_env_reach_the_pod_template():
    documents = render(
        sets={
            "podTemplate.nodeSelector.agentpool": "tasks",
            "podTemplate.tolerations[0].key": "sku",
            "podTemplate.tolerations[0].operator": "Exists",
            "podTemplate.priorityClassName": "tenant-tasks",
            "podTemplate.imagePullSecrets[0].name": "acr",
            "podTemplate.extraEnv[0].name": "TASK_AGENT_SNAPSHOT_PARALLELISM",
            "podTemplate.extraEnv[0].value": "2",
        }
    )
    pod = pod_template(documents)
    assert pod["spec"]["nodeSelector"] == {"agentpool": "tasks"}
    assert pod["spec"]["tolerations"] == [{"key": "sku", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "tenant-tasks"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "acr"}]
    assert {"name": "TASK_AGENT_SNAPSHOT_PARALLELISM", "value": "2"} in container(pod)["env"]
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[-1], strict=True)


# --- The policy: one format, read by both halves ----------------------------------------------------


def parsed(docs, namespace: str) -> PlatformPolicy:
    return parse_policy(yaml.safe_load(policy_text(docs, namespace)), f"{namespace}/data-platform-policy")


def test_the_rendered_policy_is_read_by_the_airflow_side(docs):
    full = parsed(docs, AIRFLOW_NAMESPACE)
    assert sorted(full.tenants) == sorted(TENANTS)
    for tenant, namespace in TENANTS.items():
        assert full.tenants[tenant].namespace == namespace
        assert full.tenants[tenant].service_account == f"{tenant}-tasks"


def test_the_example_matches_the_repositorys_policy_file_for_user1_and_user2(docs):
    """config/platform-policy.yaml is what the Airflow side's tests use; the chart renders the same."""
    rendered_policy = parsed(docs, AIRFLOW_NAMESPACE)
    example = load_policy(POLICY_FILE)
    assert dataclasses.replace(rendered_policy, tenants={}) == dataclasses.replace(example, tenants={})
    for tenant in ("user1", "user2"):
        assert rendered_policy.tenants[tenant] == example.tenants[tenant]


def test_each_tenant_namespace_holds_only_its_own_tenant(docs):
    full = parsed(docs, AIRFLOW_NAMESPACE)
    for tenant, namespace in TENANTS.items():
        own = parsed(docs, namespace)
        assert list(own.tenants) == [tenant]
        assert own.tenants[tenant] == full.tenants[tenant]
        assert dataclasses.replace(own, tenants={}) == dataclasses.replace(full, tenants={})


def lifecycle_rule(days: int, prefix: str) -> dict[str, Any]:
    """Azure Blob lifecycle management: delete what is under `prefix` after `days` days."""
    return {
        "rules": [
            {
                "enabled": True,
                "name": "dataPlatformRunArtifacts",
                "type": "Lifecycle",
                "definition": {
                    "actions": {
                        "baseBlob": {"delete": {"daysAfterModificationGreaterThan": days}},
                        "snapshot": {"delete": {"daysAfterCreationGreaterThan": days}},
                        "version": {"delete": {"daysAfterCreationGreaterThan": days}},
                    },
                    "filters": {"blobTypes": ["blockBlob"], "prefixMatch": [prefix]},
                },
            }
        ]
    }


def test_run_artifacts_get_a_lifecycle_rule_per_tenant(docs):
    """The exact management-policy JSON for `az storage account management-policy create --policy @…`."""
    [configmap] = [d for d in find(docs, "ConfigMap", AIRFLOW_NAMESPACE) if d["metadata"]["name"].endswith(
        "-artifact-lifecycle")]  # fmt: skip
    policies = {key: json.loads(text) for key, text in configmap["data"].items()}
    assert policies == {
        "user1.json": lifecycle_rule(30, "runs/"),  # the platform's artifact_retention
        "user2.json": lifecycle_rule(7, "runs/"),  # the tenant's own
        "user3.json": lifecycle_rule(30, "runs/user3/"),  # a folder of a shared container
    }
    annotations = configmap["metadata"]["annotations"]
    assert annotations["data-platform.io/storage-account-user3"] == "analytics"
    # What the Airflow side reads agrees: the artifacts prefix and the retention.
    full = parsed(docs, AIRFLOW_NAMESPACE)
    assert full.tenants["user3"].artifacts == "https://analytics.blob.core.windows.net/runs/user3"
    assert (full.artifact_retention, full.tenants["user2"].artifact_retention) == (30, 7)


def test_a_tenant_without_artifacts_gets_no_lifecycle_rule():
    documents = render(values=(), sets={"tenants.user1.serviceAccount.clientId": UUID})
    assert not [d for d in documents if d["metadata"]["name"].endswith("-artifact-lifecycle")]


def run_agent(agent: Path, tmp_path: Path, policy: Path, tenant: str, *command_and_secrets: str):
    """The real agent with the policy in TASK_AGENT_POLICY_FILE, as the pod template sets it."""
    result_file = tmp_path / "record.json"
    result_file.write_text("")
    env = {
        "PATH": os.environ["PATH"],
        "TASK_AGENT_POLICY_FILE": str(policy),
        "TASK_AGENT_RESULT_FILE": str(result_file),
        "TASK_AGENT_WORKDIR": str(tmp_path / "workspace"),
        "TASK_AGENT_RETURN_FILE": str(tmp_path / "xcom" / "return.json"),
        "TASK_AGENT_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    process = subprocess.run(
        [str(agent), "run", "--tenant", tenant, *command_and_secrets],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return process.returncode, json.loads(result_file.read_text())


@pytest.mark.parametrize(("tenant", "vaults"), [("user1", "user1-kv"), ("user2", "user2-kv, shared-kv"),
                                                ("user3", "user3-kv")])  # fmt: skip
def test_the_real_agent_reads_the_policy_of_the_tenant_namespace(
    docs, agent_binary, tmp_path, tenant, vaults
):
    policy = tmp_path / "platform-policy.yaml"
    policy.write_text(policy_text(docs, TENANTS[tenant]))
    # Accepted: the file parses and the tenant is found (a local secret is no vault).
    code, record = run_agent(agent_binary, tmp_path, policy, tenant, "--secret", "X=env:PATH", "--", "true")
    assert (code, record["status"]) == (0, "succeeded"), record
    # A vault outside the tenant's list is refused before any network call, naming the allowed ones.
    code, record = run_agent(
        agent_binary, tmp_path, policy, tenant, "--secret", "X=notallowed-kv/a", "--", "true"
    )
    assert (code, record["status"], record["error"]["kind"]) == (77, "agent_error", "policy_denied")
    assert f"(allowed: {vaults})" in record["error"]["message"]


def test_a_tenant_namespace_policy_allows_no_other_tenants_vaults(docs, agent_binary, tmp_path):
    """A pod in user1's namespace told it is user2 still cannot read user2's vaults."""
    policy = tmp_path / "platform-policy.yaml"
    policy.write_text(policy_text(docs, "tenant-user1"))
    code, record = run_agent(
        agent_binary, tmp_path, policy, "user2", "--secret", "X=user2-kv/a", "--", "true"
    )
    assert (code, record["error"]["kind"]) == (77, "policy_denied")


def test_the_full_policy_in_airflows_namespace_is_read_by_the_agent_too(docs, agent_binary, tmp_path):
    policy = tmp_path / "platform-policy.yaml"
    policy.write_text(policy_text(docs, AIRFLOW_NAMESPACE))
    code, record = run_agent(
        agent_binary, tmp_path, policy, "user2", "--secret", "X=user1-kv/a", "--", "true"
    )
    assert (code, record["error"]["kind"]) == (77, "policy_denied")
    assert "(allowed: user2-kv, shared-kv)" in record["error"]["message"]


# --- Bad values fail, naming the field --------------------------------------------------------------

UUID = "00000000-0000-4000-8000-000000000000"
#: (values set over the example, what the error must say): caught by values.schema.json.
SCHEMA_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "tenant name": ({"tenants.User_1.serviceAccount.clientId": UUID}, ["/tenants", "'User_1' not allowed"]),
    "client id": ({"tenants.user1.serviceAccount.clientId": "not-a-uuid"},
                  ["/tenants/user1/serviceAccount/clientId", "'not-a-uuid'"]),
    "missing client id": ({"tenants.user4.namespace": "tenant-user4"}, ["/tenants/user4", "serviceAccount"]),
    "namespace": ({"tenants.user1.namespace": "Tenant_1"}, ["/tenants/user1/namespace", "'Tenant_1'"]),
    "service account": ({"tenants.user1.serviceAccount.name": "User1 Tasks"},
                        ["/tenants/user1/serviceAccount/name"]),
    "vault": ({"tenants.user1.policy.allowed_vaults[0]": "https://user1-kv.vault.azure.net"},
              ["/tenants/user1/policy/allowed_vaults/0"]),
    "storage with a SAS": ({"tenants.user1.policy.storage[0]": "https://a.blob.core.windows.net/c?sig=x"},
                           ["/tenants/user1/policy/storage/0"]),
    "max retries": ({"tenants.user1.policy.max_retries": "-1"}, ["/tenants/user1/policy/max_retries"]),
    "artifacts with a SAS": ({"tenants.user1.policy.artifacts": "https://a.blob.core.windows.net/runs?sig=x"},
                             ["/tenants/user1/policy/artifacts"]),
    "artifact retention": ({"tenants.user1.policy.artifact_retention": "0"},
                           ["/tenants/user1/policy/artifact_retention"]),
    "platform artifact retention": ({"policy.platform.artifact_retention": "2w"},
                                    ["/policy/platform/artifact_retention"]),
    "unknown tenant key": ({"tenants.user1.quota.pods": "3"}, ["/tenants/user1", "'quota' not allowed"]),
    "quota quantity": ({"tenants.user1.resourceQuota.hard.pods": "lots"},
                       ["/tenants/user1/resourceQuota/hard/pods", "'lots'"]),
    "duration": ({"policy.platform.retry_delay": "soon"}, ["/policy/platform/retry_delay", "'soon'"]),
    "size class quantity": ({"policy.size_classes.small.memory_limit": "1 GB"},
                            ["/policy/size_classes/small/memory_limit"]),
    "size class field": ({"policy.size_classes.tiny.cpu_request": "1"},
                         ["/policy/size_classes/tiny", "missing"]),
    "unpinned image": ({"policy.platform.images.python": "python"}, ["/policy/platform/images/python"]),
    "agent_path is the chart's": ({"policy.platform.agent_path": "/bin/sh"},
                                  ["/policy/platform", "'agent_path' not allowed"]),
    "skip exit code": ({"policy.platform.skip_exit_code": "300"}, ["/policy/platform/skip_exit_code"]),
    "delivery": ({"agent.delivery": "sidecar"}, ["/agent/delivery", "'image', 'initContainer'"]),
    "agent digest": ({"agent.image.digest": "sha256:abc"}, ["/agent/image/digest"]),
    "root user": ({"podTemplate.runAsUser": "0"}, ["/podTemplate/runAsUser"]),
    "size limit": ({"podTemplate.workspaceSizeLimit": "big"}, ["/podTemplate/workspaceSizeLimit"]),
    "cache type": ({"snapshotCache.type": "nfs"}, ["/snapshotCache/type"]),
    "telemetry endpoint": ({"telemetry.endpoint": "otel:4318"}, ["/telemetry/endpoint"]),
    "collector port": ({"telemetry.collector.port": "70000"}, ["/telemetry/collector/port"]),
    "cidr": ({"networkPolicy.https.cidr": "everywhere"}, ["/networkPolicy/https/cidr"]),
    "airflow service accounts": ({"airflow.serviceAccounts[0]": "Airflow Worker"},
                                 ["/airflow/serviceAccounts/0"]),
    "misspelt top-level key": ({"tenant.user1.serviceAccount.clientId": UUID}, ["'tenant' not allowed"]),
    "pod security level": ({"podSecurity.enforce": "strict"}, ["/podSecurity/enforce"]),
}  # fmt: skip
#: Caught by the templates (references between values, combinations Kubernetes would refuse).
TEMPLATE_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "unknown size class": ({"tenants.user1.policy.size_classes[0]": "huge"},
                           ["tenants.user1.policy.size_classes: 'huge' is not a size class"]),
    "unapproved image": ({"tenants.user2.policy.images[1]": "python-gpu"},
                         ["tenants.user2.policy.images: 'python-gpu' is not an approved image"]),
    "shared namespace": ({"tenants.user2.namespace": "tenant-user1"},
                         ["tenants.user2.namespace: tenant-user1 is also tenant user1's namespace"]),
    "airflow's namespace": ({"tenants.user3.namespace": "airflow"},
                            ["tenants.user3.namespace: airflow is Airflow's namespace"]),
    "default image": ({"policy.platform.default_image": "java"},
                      ["policy.platform.default_image: 'java' is not in policy.platform.images"]),
    "host path under restricted": ({"snapshotCache.type": "hostPath"},
                                   ["snapshotCache.type: hostPath volumes are refused",
                                    "podSecurity.enforce"]),
    "quota without limit range": ({"tenants.user3.limitRange.enabled": "false"},
                                  ["tenants.user3.resourceQuota.hard: requests.ephemeral-storage needs "
                                   "limitRange.defaultRequest.ephemeral-storage"]),
}  # fmt: skip


@pytest.mark.parametrize("case", [*SCHEMA_CASES, *TEMPLATE_CASES])
def test_bad_values_fail_helm_template_naming_the_field(case):
    sets, expected = {**SCHEMA_CASES, **TEMPLATE_CASES}[case]
    result = helm_template([EXAMPLE_VALUES], sets)
    assert result.returncode != 0, f"{case}: accepted"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"


@pytest.mark.parametrize("case", [*SCHEMA_CASES, *TEMPLATE_CASES])
def test_bad_values_fail_helm_lint_strict_naming_the_field(case):
    sets, expected = {**SCHEMA_CASES, **TEMPLATE_CASES}[case]
    result = helm_lint([EXAMPLE_VALUES], sets)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case}: accepted"
    for text in expected:
        assert text in output, f"{case}: {text!r} not in:\n{output}"


def test_a_schema_error_lists_every_bad_field_at_once():
    result = helm_template([EXAMPLE_VALUES], {"agent.delivery": "x", "snapshotCache.type": "y"})
    assert "/agent/delivery" in result.stderr and "/snapshotCache/type" in result.stderr


# --- The Airflow side's pod, merged onto the chart's pod template ------------------------------------

USER1_SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/jobs/2026-11-26.tar.gz"
USER2_SNAPSHOT = "https://user2data.blob.core.windows.net/snapshots/jobs/2026-11-26.tar.gz"
USER3_SNAPSHOT = "https://user3data.blob.core.windows.net/snapshots/jobs/2026-11-26.tar.gz"
SHA = "9f" * 32


def tasks(tenant: str) -> PlatformTaskFactory:
    # No policy argument: the factory reads DATA_PLATFORM_POLICY_FILE, as in Airflow.
    return PlatformTaskFactory(CustomerDAGFactory.create(f"{tenant}_chart", tenant, "@daily"))


POD_TASKS: dict[str, Callable[[], PlatformPodOperator]] = {
    "user1 plain": lambda: tasks("user1").aks_python("plain", USER1_SNAPSHOT, "job.py"),
    "user1 secrets and env": lambda: tasks("user1").aks_python(
        "secrets", Snapshot(USER1_SNAPSHOT, SHA), "job.py", args=["--date", "{{ ds }}"],
        secrets={"DB_PASSWORD": "user1-kv/db-password"}, env={"MODE": "full"}, size="medium",
    ),
    "user2 large ml with secret files": lambda: tasks("user2").aks_python(
        "large", USER2_SNAPSHOT, "train.py", size="large", image="python-ml", timeout="90m",
        secret_files={"certs/client.pem": "shared-kv/client-cert"},
    ),
    "user3 small": lambda: tasks("user3").aks_python("small", USER3_SNAPSHOT, "job.py", timeout="20m"),
    # Declared paths: /data and /out need volumes; /tmp, /airflow/xcom and relative ones have one.
    "user1 declared data": lambda: tasks("user1").aks_python(
        "declared", USER1_SNAPSHOT, "job.py", outputs=["/data/out.csv", "/out/report", "/tmp/x.csv",
        "/airflow/xcom/y.json", "rel/z.csv"], inputs={"/data/in.csv": f"{USER1_SNAPSHOT}#sha256={SHA}"},
    ),
}  # fmt: skip
#: The volumes the operator adds for "user1 declared data" (data_platform.pod_paths).
DECLARED_MOUNTS = {"/data": "declared-data", "/out": "declared-out"}
MERGE_VARIANTS = ["example", "init-container", "host-path-cache", "no-cache-no-telemetry"]


@pytest.fixture(scope="module")
def merged(rendered, tmp_path_factory) -> dict[tuple[str, str], tuple[dict[str, Any], PlatformPodOperator]]:
    """Each pod task rendered by the Airflow side on each variant's pod template and policy."""
    found = {}
    saved = {
        name: os.environ.get(name)
        for name in ("DATA_PLATFORM_POD_TEMPLATE_FILE", "DATA_PLATFORM_POLICY_FILE")
    }
    try:
        for variant in MERGE_VARIANTS:
            directory = tmp_path_factory.mktemp(variant)
            template = directory / "pod_template.yaml"
            template.write_text(yaml.safe_dump(pod_template(rendered[variant])))
            policy = directory / "platform-policy.yaml"
            policy.write_text(policy_text(rendered[variant], AIRFLOW_NAMESPACE))
            os.environ["DATA_PLATFORM_POD_TEMPLATE_FILE"] = str(template)
            os.environ["DATA_PLATFORM_POLICY_FILE"] = str(policy)
            for name, build in POD_TASKS.items():
                op = build()
                assert op.pod_template_file == str(template)
                found[(variant, name)] = (as_manifest(render_pod(op, context_for(op, try_number=2))), op)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return found


MERGED = [(variant, name) for variant in MERGE_VARIANTS for name in POD_TASKS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("variant", "name"), MERGED)
def test_the_merged_pod_is_valid_for_the_kubernetes_version(merged, variant, name, version):
    manifest, _ = merged[(variant, name)]
    assert kubernetes_validate.validate(manifest, version, strict=True) == version.rsplit(".", 1)[0]


@pytest.mark.parametrize(("variant", "name"), MERGED)
def test_the_merged_pod_keeps_the_template_and_the_operators_settings(rendered, merged, variant, name):
    manifest, op = merged[(variant, name)]
    template = pod_template(rendered[variant])
    spec, tspec = manifest["spec"], template["spec"]
    # One container, named base, with the template's hardening and the operator's task.
    assert [c["name"] for c in spec["containers"]] == ["base"]
    base, tbase = base_container(manifest), container(template)
    assert base["securityContext"] == tbase["securityContext"] == HARDENED_CONTAINER
    assert spec["securityContext"] == tspec["securityContext"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec.get("initContainers", []) == tspec.get("initContainers", [])
    # The operator adds only a writable emptyDir at each declared path's top directory that no
    # volume of the template holds; the read-only root stays.
    declared = DECLARED_MOUNTS if name == "user1 declared data" else {}
    added = [{"name": volume, "emptyDir": {}} for volume in declared.values()]
    assert spec["volumes"] == [*tspec["volumes"], *added]
    mounts = [{"name": volume, "mountPath": path} for path, volume in declared.items()]
    assert base["volumeMounts"] == [*tbase["volumeMounts"], *mounts]
    assert len({m["mountPath"] for m in base["volumeMounts"]}) == len(base["volumeMounts"])
    # The operator's: namespace, identity, image, command, arguments, resources, clocks.
    tenant = op.labels["data-platform.io/tenant"]
    assert manifest["metadata"]["namespace"] == op.namespace == TENANTS[tenant]
    assert spec["serviceAccountName"] == op.service_account_name == f"{tenant}-tasks"
    assert base["image"] == op.image
    assert base["command"] == tbase["command"] == op.cmds, "the policy's agent_path is the template's"
    assert base["args"] == op.arguments and "{{" not in " ".join(base["args"])
    assert base["resources"] == ApiClient().sanitize_for_serialization(op.container_resources)
    assert spec["activeDeadlineSeconds"] == op.active_deadline_seconds
    assert spec["terminationGracePeriodSeconds"] == op.termination_grace_period
    assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["restartPolicy"] == "Never"
    # Labels and annotations of both.
    labels = manifest["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    assert labels["app.kubernetes.io/component"] == "task"
    assert labels["data-platform.io/tenant"] == tenant and labels["try_number"] == "2"
    assert manifest["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "base"
    # The template's settings for the agent survive, and each variable is set once.
    names = [variable["name"] for variable in base["env"]]
    assert len(names) == len(set(names)), names
    env = {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in base["env"]}
    for variable in tbase["env"]:
        assert env[variable["name"]] == variable.get("value", variable.get("valueFrom"))
    assert restricted_violations(manifest) == ([] if variant != "host-path-cache" else
                                               ["volume snapshot-cache is {'hostPath'}"])  # fmt: skip


@pytest.mark.parametrize("name", POD_TASKS)
def test_init_container_delivery_runs_the_installed_agent(merged, name):
    manifest, op = merged[("init-container", name)]
    assert op.cmds == ["/opt/task-agent/task-agent"]
    (init,) = manifest["spec"]["initContainers"]
    assert init["args"] == ["install", "/opt/task-agent"]
    mount = next(m for m in base_container(manifest)["volumeMounts"] if m["name"] == "task-agent")
    assert mount == {"name": "task-agent", "mountPath": "/opt/task-agent", "readOnly": True}


# --- The Dockerfiles ---------------------------------------------------------------------------------

DOCKERFILES = ["Dockerfile", "python-runtime.Dockerfile"]


def hadolint(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From an empty directory with an empty home: no .hadolint.yaml can relax the rules.
    return run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", "--format", "json", path], cwd=cwd
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_dockerfile_is_hadolint_clean(name, tmp_path):
    result = hadolint(DOCKER / name, tmp_path)
    assert (result.returncode, json.loads(result.stdout or "[]")) == (0, []), result.stdout + result.stderr


def test_hadolint_is_real_and_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3002"} <= codes, codes


def test_the_agent_image_is_a_static_binary_from_scratch_as_a_numeric_non_root_user():
    *builders, final = stages(DOCKER / "Dockerfile")
    assert final[0] == ("FROM", "scratch")
    instructions = dict(final)
    assert instructions["USER"] == "65532:65532"
    assert instructions["ENTRYPOINT"] == '["/usr/local/bin/task-agent"]'
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert copies == ["--from=certs /out/ /", "--from=build /out/ /"]
    build = " ".join(args for stage in builders for keyword, args in stage if keyword == "RUN")
    assert "--target x86_64-unknown-linux-musl" in build and "--release" in build and "--locked" in build
    assert "musl-tools=" in build, "pinned"
    assert "/out/usr/local/bin/task-agent" in build
    assert "/out/etc/ssl/certs/ca-certificates.crt" in build and "ca-certificates=" in build


def test_the_agent_images_build_context_holds_what_its_build_copies():
    allowed = [line for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]  # fmt: skip
    copied = [args.split()[:-1] for keyword, args in dockerfile_instructions(DOCKER / "Dockerfile")
              if keyword == "COPY" and "--from" not in args]  # fmt: skip
    for sources in copied:
        for source in sources:
            assert f"!{source}" in allowed, source
            assert (REPO / source).exists(), source
    bench_names = {path.stem for path in (REPO / "benches").glob("*.rs")}
    assert bench_names, "Cargo.toml's [[bench]] targets must be in the context"


def test_the_python_runtime_runs_the_agent_as_a_numeric_non_root_user():
    agent, runtime = stages(DOCKER / "python-runtime.Dockerfile")
    assert agent[0] == ("FROM", "${AGENT_IMAGE} AS agent")
    args = dict(a.split("=", 1) for k, a in dockerfile_instructions(DOCKER / "python-runtime.Dockerfile")
                if k == "ARG")  # fmt: skip
    assert args["PYTHON_IMAGE"].startswith("python:3.12") and "slim" in args["PYTHON_IMAGE"]
    instructions = dict(runtime)
    assert instructions["USER"] == "65532:65532"
    assert instructions["ENTRYPOINT"] == '["/usr/local/bin/task-agent"]'
    assert ("COPY", "--from=agent /usr/local/bin/task-agent /usr/local/bin/task-agent") in runtime
    assert "PYTHONUNBUFFERED=1" in instructions["ENV"]


def test_the_images_agent_path_is_the_policys_and_the_charts():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["agent"]["path"] == load_policy(POLICY_FILE).agent_path == "/usr/local/bin/task-agent"
    assert values["agent"]["image"]["tag"] == yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_a_missing_pod_template_fails_the_task_instead_of_running_unhardened(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PLATFORM_POD_TEMPLATE_FILE", str(tmp_path / "absent.yaml"))
    op = tasks("user1").aks_python("plain", USER1_SNAPSHOT, "job.py")
    with pytest.raises(
        AirflowFailException, match=r"absent\.yaml does not exist.*DATA_PLATFORM_POD_TEMPLATE_FILE"
    ):
        render_pod(op, context_for(op))
