{{/* Names, labels and the pieces every Orchard pod shares. */}}

{{- define "orchard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orchard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orchard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orchard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orchard.labels" -}}
{{ include "orchard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "orchard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orchard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orchard.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "orchard.cudaImage" -}}
{{- printf "%s:%s" .Values.cudaImage.repository .Values.cudaImage.tag -}}
{{- end -}}

{{/* Service addresses inside the cluster. */}}
{{- define "orchard.apiHost" -}}{{ include "orchard.fullname" . }}-api{{- end -}}
{{- define "orchard.mlflowHost" -}}{{ include "orchard.fullname" . }}-mlflow{{- end -}}
{{- define "orchard.servingName" -}}{{ include "orchard.fullname" . }}-serving{{- end -}}
{{- define "orchard.trainingName" -}}{{ include "orchard.fullname" . }}-training{{- end -}}

{{- define "orchard.mlflowUrl" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%d" (include "orchard.mlflowHost" .) (int .Values.mlflow.port) -}}
{{- else -}}
{{- required "mlflow.enabled is false: set externalMlflow.url to your MLflow server" .Values.externalMlflow.url -}}
{{- end -}}
{{- end -}}

{{/* KubeRay names the RayService's serve Service <name>-serve-svc. */}}
{{- define "orchard.servingUrl" -}}
{{- printf "http://%s-serve-svc:%d" (include "orchard.servingName" .) (int .Values.serving.port) -}}
{{- end -}}

{{/* KubeRay names a RayCluster's head Service <name>-head-svc. */}}
{{- define "orchard.rayAddress" -}}
{{- printf "http://%s-head-svc:8265" (include "orchard.trainingName" .) -}}
{{- end -}}

{{- define "orchard.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "orchard.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/*
The ORCHARD_* environment of Orchard's processes: the settings map, then what the chart
derives (service addresses, S3), then secrets by reference. `orchard/settings.py` rejects
an ORCHARD_* name that is not a setting, so only real names appear here.
*/}}
{{- define "orchard.settingsEnv" -}}
- name: ORCHARD_HOME
  value: /var/lib/orchard
{{- range $name, $value := .Values.settings }}
- name: {{ printf "ORCHARD_%s" (upper $name) }}
  value: {{ if kindIs "slice" $value }}{{ toJson $value | quote }}{{ else }}{{ toString $value | quote }}{{ end }}
{{- end }}
- name: ORCHARD_MLFLOW_TRACKING_URI
  value: {{ include "orchard.mlflowUrl" . | quote }}
{{- if .Values.serving.enabled }}
- name: ORCHARD_SERVING_URL
  value: {{ include "orchard.servingUrl" . | quote }}
{{- end }}
{{- if .Values.training.enabled }}
- name: ORCHARD_RAY_ADDRESS
  value: {{ include "orchard.rayAddress" . | quote }}
{{- end }}
{{- if .Values.training.sharedData.existingClaim }}
- name: ORCHARD_DATA_ROOT
  value: {{ .Values.training.sharedData.mountPath | quote }}
{{- end }}
{{- with .Values.externalAirflow }}
{{- if .url }}
- name: ORCHARD_AIRFLOW_URL
  value: {{ .url | quote }}
- name: ORCHARD_AIRFLOW_USERNAME
  value: {{ .username | quote }}
{{- end }}
{{- if .publicUrl }}
- name: ORCHARD_AIRFLOW_PUBLIC_URL
  value: {{ .publicUrl | quote }}
{{- end }}
{{- if and .existingSecret .tokenKey }}
- name: ORCHARD_AIRFLOW_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .tokenKey | quote }}}
{{- else if .existingSecret }}
- name: ORCHARD_AIRFLOW_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- include "orchard.s3Env" . }}
{{- end -}}

{{- define "orchard.s3Env" -}}
{{- with .Values.externalS3 }}
{{- if .endpoint }}
- name: ORCHARD_S3_ENDPOINT
  value: {{ .endpoint | quote }}
- name: ORCHARD_S3_BUCKET
  value: {{ .bucket | quote }}
- name: ORCHARD_S3_REGION
  value: {{ .region | quote }}
{{- if .existingSecret }}
- name: ORCHARD_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .accessKeyKey | quote }}}
- name: ORCHARD_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .secretKeyKey | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The platform database URL, required by the API and the migration Job. */}}
{{- define "orchard.databaseEnv" -}}
- name: ORCHARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "set externalPostgresql.existingSecret: a Secret whose key externalPostgresql.key holds the platform database URL" .Values.externalPostgresql.existingSecret | quote }}
      key: {{ .Values.externalPostgresql.key | quote }}
{{- end -}}

{{/* Writable paths under a read-only root file system. */}}
{{- define "orchard.scratchVolumeMounts" -}}
- name: home
  mountPath: /var/lib/orchard
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "orchard.scratchVolumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* NetworkPolicy peers: Orchard pods of one component; a namespace by name. */}}
{{- define "orchard.peerComponent" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
      app.kubernetes.io/instance: {{ .instance }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}
{{- define "orchard.peerNamespace" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . }}
{{- end -}}
