//! What the exported data says about where it comes from: the pod (from the downward-API
//! variables the pod template sets) and the Airflow task, under Airflow's own attribute
//! names so the agent's spans sit next to Airflow's in one query. Pure.

use opentelemetry::KeyValue;

use crate::identity::TaskIdentity;

pub const SERVICE_NAME: &str = "task-agent";

/// The downward-API variables the pod template sets, and the attribute each becomes.
pub const POD_VARIABLES: [(&str, &str); 3] = [
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
];

/// Attributes of every metric data point: the tenant, so usage can be summed per tenant.
pub fn point_attributes(identity: &TaskIdentity) -> Vec<KeyValue> {
    identity
        .tenant
        .iter()
        .map(|tenant| KeyValue::new("tenant", tenant.clone()))
        .collect()
}

/// The resource attributes the agent adds to what the SDK detects (`OTEL_RESOURCE_ATTRIBUTES`,
/// `telemetry.sdk.*`); where both name one, these win.
pub fn attributes(identity: &TaskIdentity, var: impl Fn(&str) -> Option<String>) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    for (variable, key) in POD_VARIABLES {
        if let Some(value) = var(variable).filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(key, value));
        }
    }
    let text = [
        ("airflow.dag_id", &identity.dag_id),
        ("airflow.task_id", &identity.task_id),
        ("airflow.dag_run.run_id", &identity.run_id),
        ("tenant", &identity.tenant),
    ];
    for (key, value) in text {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.clone()));
        }
    }
    if let Some(try_number) = identity.try_number {
        attributes.push(KeyValue::new(
            "airflow.task_instance.try_number",
            i64::from(try_number),
        ));
    }
    if let Some(map_index) = identity.map_index {
        attributes.push(KeyValue::new("airflow.task_instance.map_index", map_index));
    }
    attributes
}

/// The `service.name` to set over the SDK's: `OTEL_SERVICE_NAME` when set (the SDK would let
/// a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` win over it, against the specification),
/// none when `OTEL_RESOURCE_ATTRIBUTES` names one, else `task-agent`.
pub fn service_name(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(name) = var("OTEL_SERVICE_NAME").filter(|n| !n.trim().is_empty()) {
        return Some(name);
    }
    let named_by_attributes = var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|list| {
        list.split(',')
            .filter_map(|pair| pair.split_once('='))
            .any(|(key, _)| key.trim() == "service.name")
    });
    (!named_by_attributes).then(|| SERVICE_NAME.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn the_task_identity_uses_airflows_attribute_names() {
        let identity = TaskIdentity {
            tenant: Some("team-a".into()),
            dag_id: Some("etl".into()),
            task_id: Some("load".into()),
            run_id: Some("manual__2026".into()),
            try_number: Some(2),
            map_index: Some(-1),
        };
        let attributes = attributes(
            &identity,
            lookup(&[("K8S_POD_NAME", "etl-load-abc"), ("K8S_NODE_NAME", "")]),
        );
        assert_eq!(
            get(&attributes, "airflow.dag_id"),
            Some(&Value::from("etl"))
        );
        assert_eq!(
            get(&attributes, "airflow.task_id"),
            Some(&Value::from("load"))
        );
        assert_eq!(
            get(&attributes, "airflow.dag_run.run_id"),
            Some(&Value::from("manual__2026"))
        );
        assert_eq!(
            get(&attributes, "airflow.task_instance.try_number"),
            Some(&Value::I64(2))
        );
        assert_eq!(
            get(&attributes, "airflow.task_instance.map_index"),
            Some(&Value::I64(-1))
        );
        assert_eq!(get(&attributes, "tenant"), Some(&Value::from("team-a")));
        assert_eq!(
            get(&attributes, "k8s.pod.name"),
            Some(&Value::from("etl-load-abc"))
        );
        assert_eq!(get(&attributes, "k8s.node.name"), None);
        assert_eq!(get(&attributes, "k8s.namespace.name"), None);
        assert_eq!(
            get(&attributes, "service.version"),
            Some(&Value::from(env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn an_unknown_identity_adds_only_the_version() {
        let attributes = attributes(&TaskIdentity::default(), lookup(&[]));
        assert_eq!(attributes.len(), 1);
        assert!(point_attributes(&TaskIdentity::default()).is_empty());
    }

    #[test]
    fn the_service_name_defers_to_the_standard_variables() {
        assert_eq!(service_name(lookup(&[])), Some("task-agent".into()));
        assert_eq!(
            service_name(lookup(&[("OTEL_SERVICE_NAME", "tasks")])),
            Some("tasks".into())
        );
        assert_eq!(
            service_name(lookup(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "a=b, service.name=x"
            )])),
            None
        );
        assert_eq!(
            service_name(lookup(&[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=x"),
                ("OTEL_SERVICE_NAME", "tasks")
            ])),
            Some("tasks".into())
        );
    }
}
