{{/* Chart name, overridable. */}}
{{- define "musictext.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: <release>-<chart> unless the release name already holds the chart name. */}}
{{- define "musictext.fullname" -}}
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

{{- define "musictext.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades. */}}
{{- define "musictext.selectorLabels" -}}
app.kubernetes.io/name: {{ include "musictext.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "musictext.labels" -}}
helm.sh/chart: {{ include "musictext.chart" . }}
{{ include "musictext.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: musictext
{{- end -}}

{{- define "musictext.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "musictext.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "musictext.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The audio-embedding step's image (all three families), same tag rule. */}}
{{- define "musictext.audioImage" -}}
{{- printf "%s:%s" .Values.audioImage.repository (default .Chart.AppVersion .Values.audioImage.tag) -}}
{{- end -}}

{{/* The KFP namespace: explicit, else the release namespace. */}}
{{- define "musictext.kfpNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace -}}
{{- end -}}

{{/* Pipeline version name for the hook: unique per install/upgrade. */}}
{{- define "musictext.pipelineVersion" -}}
{{- printf "%s-r%d" (default .Chart.AppVersion .Values.image.tag) (int .Release.Revision) -}}
{{- end -}}
