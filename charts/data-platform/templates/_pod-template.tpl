{{/*
The task pod template: KubernetesPodOperator's pod_template_file, which the Airflow side reads
from DATA_PLATFORM_POD_TEMPLATE_FILE. The operator merges its own pod onto it: it sets the
namespace, the service account, labels, the image, command and args, resources, clocks and the
termination message policy, and appends its env and volume mounts to the first container's. So
the first container is "base" (the operator's base_container_name), and nothing here is what
the operator sets per task, except defaults that keep the template a valid Pod on its own.
*/}}
{{- define "data-platform.podTemplate" -}}
{{- $v := .Values }}
{{- $t := $v.podTemplate }}
{{- $policyDir := include "data-platform.policyMountDir" . }}
{{- $initContainer := eq $v.agent.delivery "initContainer" }}
{{- $cache := $v.snapshotCache }}
{{- $containerSecurity := dict
      "allowPrivilegeEscalation" false
      "readOnlyRootFilesystem" true
      "privileged" false
      "runAsNonRoot" true
      "runAsUser" $t.runAsUser
      "runAsGroup" $t.runAsGroup
      "capabilities" (dict "drop" (list "ALL"))
      "seccompProfile" (dict "type" "RuntimeDefault") }}
# The task pod template of the data-platform chart (KubernetesPodOperator's pod_template_file).
# The operator sets namespace, service account, image, command, args, resources and clocks.
apiVersion: v1
kind: Pod
metadata:
  labels:
    app.kubernetes.io/name: {{ include "data-platform.name" . }}
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: task
    # The workload identity webhook injects the tenant identity's token only into labelled pods.
    azure.workload.identity/use: "true"
    {{- with $t.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    kubectl.kubernetes.io/default-container: base
    {{- with $t.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  restartPolicy: Never
  # The agent needs no Kubernetes API token (the workload identity token is projected separately).
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $t.runAsUser }}
    runAsGroup: {{ $t.runAsGroup }}
    fsGroup: {{ $t.fsGroup }}
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile:
      type: RuntimeDefault
  {{- with $t.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $t.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $initContainer }}
  initContainers:
    # Copies the static agent into a volume the task container mounts read-only: any approved
    # image gets the agent, and nothing the task (or a hostile snapshot) does can replace it.
    - name: install-task-agent
      image: {{ include "data-platform.agentImage" . }}
      imagePullPolicy: {{ $v.agent.image.pullPolicy }}
      command: [/usr/local/bin/task-agent]
      args: [install, {{ $v.agent.installDir | quote }}]
      {{- with $v.agent.installResources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $containerSecurity | nindent 8 }}
      terminationMessagePolicy: FallbackToLogsOnError
      volumeMounts:
        - name: task-agent
          mountPath: {{ $v.agent.installDir }}
  {{- end }}
  containers:
    - name: base
      # The operator sets the tenant's approved image, the command and its arguments.
      image: {{ index $v.policy.platform.images $v.policy.platform.default_image }}
      command: [{{ include "data-platform.agentPath" . | quote }}]
      securityContext:
        {{- toYaml $containerSecurity | nindent 8 }}
      terminationMessagePath: /dev/termination-log
      terminationMessagePolicy: FallbackToLogsOnError
      env:
        - {name: TASK_AGENT_RESULT_FILE, value: /dev/termination-log}
        - {name: TASK_AGENT_WORKDIR, value: /workspace}
        - {name: TASK_AGENT_RETURN_FILE, value: /airflow/xcom/return.json}
        - {name: TASK_AGENT_SECRETS_DIR, value: /run/secrets}
        - {name: TASK_AGENT_POLICY_FILE, value: {{ printf "%s/%s" $policyDir (include "data-platform.policyKey" .) | quote }}}
        - {name: TASK_AGENT_LOG_FORMAT, value: {{ $v.agent.logFormat | quote }}}
        - {name: TASK_AGENT_LOG_LEVEL, value: {{ $v.agent.logLevel | quote }}}
        {{- if ne $cache.type "none" }}
        - {name: TASK_AGENT_CACHE_DIR, value: {{ $cache.mountPath | quote }}}
        {{- end }}
        {{- with $v.telemetry.endpoint }}
        - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ . | quote }}}
        {{- end }}
        # The read-only root file system leaves /tmp as the one writable home.
        - {name: HOME, value: /tmp}
        # Pod, namespace and node, on the agent's telemetry resource and in its logs.
        - name: K8S_POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: K8S_NAMESPACE_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - name: K8S_NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        {{- range $t.extraEnv }}
        {{- $variable := deepCopy . }}
        {{- if hasKey $variable "value" }}
        {{- $_ := set $variable "value" (toString $variable.value) }}
        {{- end }}
        - {{ toYaml $variable | nindent 10 | trim }}
        {{- end }}
      volumeMounts:
        - {name: workspace, mountPath: /workspace}
        - {name: tmp, mountPath: /tmp}
        - {name: secrets, mountPath: /run/secrets}
        - {name: return-value, mountPath: /airflow/xcom}
        - {name: platform-policy, mountPath: {{ $policyDir }}, readOnly: true}
        {{- if eq $cache.type "hostPath" }}
        # One directory per tenant namespace on the node: tenants never share cached snapshots.
        - {name: snapshot-cache, mountPath: {{ $cache.mountPath }}, subPathExpr: $(K8S_NAMESPACE_NAME)}
        {{- else if eq $cache.type "emptyDir" }}
        - {name: snapshot-cache, mountPath: {{ $cache.mountPath }}}
        {{- end }}
        {{- if $initContainer }}
        - {name: task-agent, mountPath: {{ $v.agent.installDir }}, readOnly: true}
        {{- end }}
  volumes:
    - name: workspace
      emptyDir: {sizeLimit: {{ $t.workspaceSizeLimit | toString | quote }}}
    - name: tmp
      emptyDir: {sizeLimit: {{ $t.tmpSizeLimit | toString | quote }}}
    # Secret files live in memory only, never on the node's disk.
    - name: secrets
      emptyDir: {medium: Memory, sizeLimit: {{ $t.secretsSizeLimit | toString | quote }}}
    - name: return-value
      emptyDir: {sizeLimit: {{ $t.returnValueSizeLimit | toString | quote }}}
    # The platform policy: a ConfigMap of the same name in every tenant namespace.
    - name: platform-policy
      configMap:
        name: {{ include "data-platform.policyConfigMap" . }}
        defaultMode: 0444
    {{- if eq $cache.type "hostPath" }}
    - name: snapshot-cache
      hostPath: {path: {{ $cache.hostPath | quote }}, type: DirectoryOrCreate}
    {{- else if eq $cache.type "emptyDir" }}
    - name: snapshot-cache
      emptyDir: {sizeLimit: {{ $cache.sizeLimit | toString | quote }}}
    {{- end }}
    {{- if $initContainer }}
    - name: task-agent
      emptyDir: {sizeLimit: 64Mi}
    {{- end }}
{{- end }}
