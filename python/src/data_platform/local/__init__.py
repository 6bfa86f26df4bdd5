"""Pod tasks on this machine instead of a cluster: the local pod runner (docs/local-runs.md).

Chosen by configuration, never by a DAG: `[data_platform] local_runner = process` (or the
variable `AIRFLOW__DATA_PLATFORM__LOCAL_RUNNER=process`). `PlatformPodOperator.execute` then
builds the same pod request it would send to Kubernetes, hands it to a back-end (`backends`),
and passes the kubelet's view of the end (`kubelet`) to the same `cleanup` that reads the
record, so outcomes, retries, skips, OOM escalation and XComs are the cluster's code path.
"""
