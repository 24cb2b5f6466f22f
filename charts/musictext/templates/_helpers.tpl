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

{{/* An image reference from {repository, tag, digest}: repository@digest when a digest is set
(immutable), else repository:tag with the tag defaulting to the chart's appVersion.
Call: include "musictext.imageRef" (list .Values.image .Chart.AppVersion) */}}
{{- define "musictext.imageRef" -}}
{{- $image := index . 0 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "musictext.image" -}}
{{- include "musictext.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{/* The audio-embedding step's image (all three families). */}}
{{- define "musictext.audioImage" -}}
{{- include "musictext.imageRef" (list .Values.audioImage .Chart.AppVersion) -}}
{{- end -}}

{{- define "musictext.tensorboardImage" -}}
{{- include "musictext.imageRef" (list .Values.tensorboard.image .Chart.AppVersion) -}}
{{- end -}}

{{/* The bucket Secret (bucket.existingSecret): volume, mount and the variable pointing Google
clients at the key file. Each renders nothing without a Secret. */}}
{{- define "musictext.bucketSecretMountPath" -}}/var/run/secrets/musictext/bucket{{- end -}}

{{- define "musictext.bucketSecretVolume" -}}
{{- if .Values.bucket.existingSecret -}}
- name: bucket-secret
  secret:
    secretName: {{ .Values.bucket.existingSecret }}
    items:
      - key: {{ .Values.bucket.secretKey }}
        path: {{ .Values.bucket.secretKey }}
{{- end }}
{{- end -}}

{{- define "musictext.bucketSecretMount" -}}
{{- if .Values.bucket.existingSecret -}}
- name: bucket-secret
  mountPath: {{ include "musictext.bucketSecretMountPath" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "musictext.bucketSecretEnv" -}}
{{- if .Values.bucket.existingSecret -}}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ printf "%s/%s" (include "musictext.bucketSecretMountPath" .) .Values.bucket.secretKey | quote }}
{{- end }}
{{- end -}}

{{/* The namespace the pipeline is uploaded into: the release's (the profile namespace) in
multi-user Kubeflow, none (a shared pipeline) in single-user KFP. */}}
{{- define "musictext.kfpNamespace" -}}
{{- if .Values.kfp.multiUser -}}{{ .Release.Namespace }}
{{- end -}}
{{- end -}}

{{/* `musictext compile` arguments: the chart's values become the compiled pipeline's defaults
(a run can still override its parameters). train_options carry the training job's settings that
have no pipeline parameter of their own (dotted keys nest: requests.cpu -> {"requests": {"cpu":
...}}); a run that passes its own train_options replaces them all. */}}
{{- define "musictext.compileArgs" -}}
{{- $t := .Values.training -}}
{{- $args := list
  "--pipeline-root" .Values.pipelineRoot
  "--image" (include "musictext.image" .)
  "--audio-image" (include "musictext.audioImage" .)
  "--gpu-node-selector" (printf "%s=%s" .Values.gpuNodePool.nodeSelector.key .Values.gpuNodePool.nodeSelector.value)
  "--families" (join "," .Values.families)
  "--train-launcher" $t.launcher
  "--train-nodes" (toString $t.nnodes)
  "--procs-per-node" (toString $t.nprocPerNode)
  "--gpus-per-node" (toString $t.gpusPerNode)
  "--train-timeout-minutes" (toString $t.timeoutMinutes)
-}}
{{- $options := list
  (printf "service_account=%s" (include "musictext.serviceAccountName" .))
  (printf "shm_size=%s" $t.shmSize)
  (printf "active_deadline_seconds=%d" (int $t.activeDeadlineSeconds))
-}}
{{- if eq $t.launcher "trainjob" -}}
{{- $options = append $options (printf "runtime_ref=%s" $t.runtimeRef) -}}
{{- else -}}
{{- /* A TrainJob has neither: its runtime's JobSet template sets them. */ -}}
{{- $options = concat $options (list (printf "image_pull_policy=%s" .Values.image.pullPolicy) (printf "ttl_seconds_after_finished=%d" (int $t.ttlSecondsAfterFinished))) -}}
{{- end -}}
{{- range $kind := list "requests" "limits" -}}
{{- range $name, $quantity := get ($t.resources | default dict) $kind | default dict -}}
{{- $options = append $options (printf "%s.%s=%v" $kind $name $quantity) -}}
{{- end -}}
{{- end -}}
{{- range $options -}}
{{- $args = concat $args (list "--train-options" .) -}}
{{- end -}}
{{- if .Values.bucket.existingSecret -}}
{{- $args = concat $args (list "--bucket-secret" (printf "%s:%s" .Values.bucket.existingSecret .Values.bucket.secretKey)) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* Pipeline version name: the image tag, the release revision, and a hash of the compile
arguments, so a retried hook finds its own upload and a reinstall with other values does not
collide with an old version of the same revision. */}}
{{- define "musictext.pipelineVersion" -}}
{{- printf "%s-r%d-%s" (default .Chart.AppVersion .Values.image.tag) (int .Release.Revision) (include "musictext.compileArgs" . | sha256sum | trunc 8) -}}
{{- end -}}
