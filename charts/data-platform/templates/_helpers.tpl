{{/*
The chart's helpers. Names of the chart's own objects are "FULLNAME-PURPOSE"; the same name is
used in every tenant namespace, because the one pod template refers to them by name.
*/}}

{{- define "data-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "data-platform.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "data-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "data-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "data-platform.airflowNamespace" -}}
{{- default .Release.Namespace .Values.airflow.namespace }}
{{- end }}

{{- define "data-platform.policyConfigMap" -}}
{{- include "data-platform.fullname" . }}-policy
{{- end }}

{{- define "data-platform.podTemplateConfigMap" -}}
{{- include "data-platform.fullname" . }}-pod-template
{{- end }}

{{/* The policy's file name, as the ConfigMap key and under the pods' mount. */}}
{{- define "data-platform.policyKey" -}}
platform-policy.yaml
{{- end }}

{{/* Where the task container finds the policy (TASK_AGENT_POLICY_FILE). */}}
{{- define "data-platform.policyMountDir" -}}
/etc/data-platform
{{- end }}

{{/* The agent's path in the task container, by delivery mode: the policy's agent_path. */}}
{{- define "data-platform.agentPath" -}}
{{- if eq .Values.agent.delivery "initContainer" }}
{{- printf "%s/task-agent" (trimSuffix "/" .Values.agent.installDir) }}
{{- else }}
{{- .Values.agent.path }}
{{- end }}
{{- end }}

{{- define "data-platform.agentImage" -}}
{{- $image := .Values.agent.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $image.tag }}
{{- end }}
{{- end }}

{{/*
The tenants, each merged onto tenantDefaults and completed with its defaults, as YAML (read
back with fromYaml). Every template starts here, so a values error stops any of them with the
messages of "data-platform.valuesErrors".
*/}}
{{- define "data-platform.tenants" -}}
{{- $errors := include "data-platform.valuesErrors" . | fromYamlArray }}
{{- if $errors }}
{{- fail (printf "invalid values:\n- %s" (join "\n- " $errors)) }}
{{- end }}
{{- $root := . }}
{{- $tenants := dict }}
{{- range $name, $spec := .Values.tenants }}
{{- $tenant := mustMergeOverwrite (deepCopy $root.Values.tenantDefaults) (deepCopy $spec) }}
{{- $_ := set $tenant "namespace" (default (printf "tenant-%s" $name) $spec.namespace) }}
{{- $account := deepCopy $spec.serviceAccount }}
{{- $_ := set $account "name" (default (printf "%s-tasks" $name) $account.name) }}
{{- $_ := set $tenant "serviceAccount" $account }}
{{- $_ := set $tenant "policy" (deepCopy (default dict $spec.policy)) }}
{{- $_ := set $tenants $name $tenant }}
{{- end }}
{{- toYaml $tenants }}
{{- end }}

{{/*
What values.schema.json cannot check, as a YAML list of messages that name the field: names
that must refer to each other, and combinations Kubernetes would refuse at run time.
*/}}
{{- define "data-platform.valuesErrors" -}}
{{- $v := .Values }}
{{- $errors := list }}
{{- $airflowNamespace := include "data-platform.airflowNamespace" . }}
{{- $sizeClasses := $v.policy.size_classes }}
{{- $images := $v.policy.platform.images }}
{{- if not (hasKey $images $v.policy.platform.default_image) }}
{{- $errors = append $errors (printf "policy.platform.default_image: '%s' is not in policy.platform.images (known: %s)" $v.policy.platform.default_image (keys $images | sortAlpha | join ", ")) }}
{{- end }}
{{- if and (eq $v.snapshotCache.type "hostPath") (ne $v.podSecurity.enforce "privileged") }}
{{- $errors = append $errors (printf "snapshotCache.type: hostPath volumes are refused by the '%s' Pod Security level of the tenant namespaces; set podSecurity.enforce to privileged, or use snapshotCache.type emptyDir or none" $v.podSecurity.enforce) }}
{{- end }}
{{- $namespaces := dict }}
{{- range $name, $spec := $v.tenants }}
{{- $tenant := mustMergeOverwrite (deepCopy $v.tenantDefaults) (deepCopy $spec) }}
{{- $namespace := default (printf "tenant-%s" $name) $spec.namespace }}
{{- if hasKey $namespaces $namespace }}
{{- $errors = append $errors (printf "tenants.%s.namespace: %s is also tenant %s's namespace; every tenant needs its own" $name $namespace (get $namespaces $namespace)) }}
{{- end }}
{{- $_ := set $namespaces $namespace $name }}
{{- if eq $namespace $airflowNamespace }}
{{- $errors = append $errors (printf "tenants.%s.namespace: %s is Airflow's namespace; task pods need a namespace of their own" $name $namespace) }}
{{- end }}
{{- $policy := default dict $spec.policy }}
{{- range $size := (default list $policy.size_classes) }}
{{- if not (hasKey $sizeClasses $size) }}
{{- $errors = append $errors (printf "tenants.%s.policy.size_classes: '%s' is not a size class (known: %s); define it in policy.size_classes or remove it" $name $size (keys $sizeClasses | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- range $image := (default list $policy.images) }}
{{- if not (hasKey $images $image) }}
{{- $errors = append $errors (printf "tenants.%s.policy.images: '%s' is not an approved image (known: %s); add it to policy.platform.images or remove it" $name $image (keys $images | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- $hard := ternary (dig "resourceQuota" "hard" (dict) $tenant) (dict) (dig "resourceQuota" "enabled" false $tenant) }}
{{- range $kind := list "requests" "limits" }}
{{- if hasKey $hard (printf "%s.ephemeral-storage" $kind) }}
{{- $from := ternary "defaultRequest" "default" (eq $kind "requests") }}
{{- $range := ternary (dig "limitRange" $from (dict) $tenant) (dict) (dig "limitRange" "enabled" false $tenant) }}
{{- if not (hasKey $range "ephemeral-storage") }}
{{- $errors = append $errors (printf "tenants.%s.resourceQuota.hard: %s.ephemeral-storage needs limitRange.%s.ephemeral-storage (the operator sets none), or every task pod is refused; add it to the limitRange or remove it from the quota" $name $kind $from) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $errors }}
{{- end }}

{{/*
The policy file (the format of config/platform-policy.yaml) for the tenants given in
"tenants" (a dict of completed tenants), from the root context "root".
*/}}
{{- define "data-platform.policyFile" -}}
{{- $root := .root }}
{{- $platform := deepCopy $root.Values.policy.platform }}
{{- $_ := set $platform "agent_path" (include "data-platform.agentPath" $root) }}
{{- $tenants := dict }}
{{- range $name, $tenant := .tenants }}
{{- $entry := deepCopy $tenant.policy }}
{{- $_ := set $entry "namespace" $tenant.namespace }}
{{- $_ := set $entry "service_account" $tenant.serviceAccount.name }}
{{- $_ := set $tenants $name $entry }}
{{- end -}}
# The platform policy, rendered by the data-platform chart from its values. Read by the
# Airflow side (DATA_PLATFORM_POLICY_FILE: all of it) and by task-agent (TASK_AGENT_POLICY_FILE:
# tenants.NAME.allowed_vaults). Change the chart's values, not this file.
{{ toYaml (dict "platform" $platform "size_classes" $root.Values.policy.size_classes "cost" ($root.Values.policy.cost | default dict) "tenants" $tenants) }}
{{- end }}

{{/* A label selector's YAML, or {} for an empty one. */}}
{{- define "data-platform.selector" -}}
{{- if . }}{{ toYaml . }}{{ else }}{}{{ end }}
{{- end }}
