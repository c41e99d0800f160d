{{/* Name of the operator's objects: "vestige-operator" for a release of that name. */}}
{{- define "vestige-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels Helm adds to every object (tests/unit/test_chart.py normalises exactly these). */}}
{{- define "vestige-operator.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* metadata.labels of every object, like the kustomize base's `labels:` plus Helm's. */}}
{{- define "vestige-operator.labels" -}}
app.kubernetes.io/part-of: vestige-operator
{{ include "vestige-operator.helmLabels" . }}
{{- end -}}

{{- define "vestige-operator.selectorLabels" -}}
app.kubernetes.io/name: vestige-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The rules of the ClusterRole (or the `kind`, e.g. Role) named `name` from files/rbac.yaml
(= manifests/base/rbac.yaml). */}}
{{- define "vestige-operator.baseRules" -}}
{{- $name := .name -}}
{{- $kind := .kind | default "ClusterRole" -}}
{{- $found := dict -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" (.root.Files.Get "files/rbac.yaml") -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if and $obj (eq (toString $obj.kind) $kind) (eq (toString $obj.metadata.name) $name) -}}
{{- $_ := set $found "rules" $obj.rules -}}
{{- end -}}
{{- end -}}
{{- if not $found.rules -}}
{{- fail (printf "files/rbac.yaml has no %s %s" $kind $name) -}}
{{- end -}}
{{- toYaml $found.rules -}}
{{- end -}}
