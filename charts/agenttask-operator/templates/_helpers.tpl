{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "agenttask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "agenttask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agenttask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agenttask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agenttask.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agenttask.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agenttask-operator
{{- end -}}

{{- define "agenttask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agenttask.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agenttask.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when kopf peering is on: more than one replica, or asked for explicitly. */}}
{{- define "agenttask.peering" -}}
{{- if and (not (include "agenttask.sharded" .)) (or .Values.peering.enabled (gt (int .Values.replicaCount) 1)) -}}true{{- end -}}
{{- end -}}

{{/* Sharded mode: a StatefulSet of sharding.shards replicas sharing the tasks (no peering). */}}
{{- define "agenttask.sharded" -}}
{{- if gt (int .Values.sharding.shards) 1 -}}true{{- end -}}
{{- end -}}

{{/* Operator pods: the shards in sharded mode, else replicaCount. */}}
{{- define "agenttask.replicas" -}}
{{- if include "agenttask.sharded" . -}}{{ int .Values.sharding.shards }}{{- else -}}{{ int .Values.replicaCount }}{{- end -}}
{{- end -}}

{{/* The rules every watched scope needs (namespaced Role or the ClusterRole in cluster mode). */}}
{{- define "agenttask.taskRules" -}}
# AgentTasks: kopf lists/watches them and patches finalizers, annotations and status;
# the operator reads them, writes status with a resourceVersion-checked merge patch,
# creates them (GitHub webhook) and deletes finished ones (ttlSecondsAfterFinished).
- apiGroups: [agenttask.io]
  resources: [agenttasks]
  verbs: [get, list, watch, patch, create, delete]
- apiGroups: [agenttask.io]
  resources: [agenttasks/status]
  verbs: [patch]
# AgentTaskQuotas: kopf lists/watches them (admission caps) and the operator writes their status
# (used and remaining).
- apiGroups: [agenttask.io]
  resources: [agenttaskquotas]
  verbs: [get, list, watch]
- apiGroups: [agenttask.io]
  resources: [agenttaskquotas/status]
  verbs: [patch]
# Kubernetes events on every phase change (kopf.event -> core/v1 events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Secrets named by tasks (agent env secretKeyRef, repository credentials): read-only, single
# GETs; never list/watch, never write.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

{{/* A value as an environment string: maps and lists as JSON (pydantic-settings decodes them),
whole numbers without an exponent (YAML numbers arrive as float64, which would print 1000000 as 1e+06). */}}
{{- define "agenttask.envValue" -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) -}}
{{- toJson . -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Combinations the schema cannot express, with a message that says what to change. */}}
{{- define "agenttask.validate" -}}
{{- $ns := .Values.watchNamespaces -}}
{{- $gh := .Values.settings.githubNamespace -}}
{{- if and $ns (or .Values.github.webhookSecret.existingSecret .Values.settings.githubTokenSecret .Values.settings.githubAppSecret) (not (has $gh $ns)) -}}
{{- fail (printf "settings.githubNamespace %q must be one of watchNamespaces %v: webhook-created AgentTasks and the GitHub credential Secrets live there" $gh $ns) -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.name is required when serviceAccount.create is false" -}}
{{- end -}}
{{- end -}}
