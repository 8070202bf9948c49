{{/*
A KubeRay pod template (head or worker group) running Orchard's image.
Arguments: root, component (serving|training), group (the values of the head or the
worker group), head (bool), env (bool: the ORCHARD_* settings).
*/}}
{{- define "orchard.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- $gpus := int (default 0 $group.gpus) -}}
metadata:
  labels:
    {{- include "orchard.labels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- if not .head }}
  serviceAccountName: {{ include "orchard.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- end }}
  {{- /* The head keeps KubeRay's defaults: with no serviceAccountName KubeRay makes the
  autoscaler's ServiceAccount and RBAC, and the autoscaler sidecar needs the token. */}}
  securityContext:
    {{- include "orchard.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ if .head }}ray-head{{ else }}ray-worker{{ end }}
      image: {{ if gt $gpus 0 }}{{ include "orchard.cudaImage" $root }}{{ else }}{{ include "orchard.image" $root }}{{ end }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: metrics, containerPort: 8080}
        {{- if eq .component "serving" }}
        - {name: serve, containerPort: {{ $root.Values.serving.port }}}
        {{- end }}
      env:
        - name: HOME
          value: /var/lib/orchard
        {{- if .env }}
        {{- include "orchard.settingsEnv" $root | nindent 8 }}
        {{- end }}
      {{- if .head }}
      readinessProbe:
        httpGet: {path: /api/gcs_healthz, port: 8265}
        periodSeconds: 5
        failureThreshold: 10
      livenessProbe:
        httpGet: {path: /api/gcs_healthz, port: 8265}
        initialDelaySeconds: 30
        periodSeconds: 10
        failureThreshold: 120
      {{- else }}
      readinessProbe:
        httpGet: {path: /api/local_raylet_healthz, port: 52365}
        periodSeconds: 5
        failureThreshold: 10
      livenessProbe:
        httpGet: {path: /api/local_raylet_healthz, port: 52365}
        initialDelaySeconds: 30
        periodSeconds: 10
        failureThreshold: 120
      {{- end }}
      securityContext:
        {{- include "orchard.containerSecurityContext" $root | nindent 8 }}
      resources:
        {{- $resources := deepCopy $group.resources }}
        {{- if gt $gpus 0 }}
        {{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpus) (default dict $resources.limits)) }}
        {{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" $gpus) (default dict $resources.requests)) }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        {{- include "orchard.scratchVolumeMounts" $root | nindent 8 }}
        - name: dshm
          mountPath: /dev/shm
        {{- if and (eq .component "training") $root.Values.training.sharedData.existingClaim }}
        - name: shared-data
          mountPath: {{ $root.Values.training.sharedData.mountPath }}
        {{- end }}
  volumes:
    {{- include "orchard.scratchVolumes" $root | nindent 4 }}
    # Ray's object store lives in /dev/shm.
    - name: dshm
      emptyDir:
        medium: Memory
    {{- if and (eq .component "training") $root.Values.training.sharedData.existingClaim }}
    - name: shared-data
      persistentVolumeClaim:
        claimName: {{ $root.Values.training.sharedData.existingClaim }}
    {{- end }}
  {{- $nodeSelector := deepCopy (default dict $group.nodeSelector) }}
  {{- $tolerations := default list $group.tolerations }}
  {{- if gt $gpus 0 }}
  {{- if not $nodeSelector }}
  {{- $_ := set $nodeSelector "nvidia.com/gpu.present" "true" }}
  {{- end }}
  {{- if not $tolerations }}
  {{- $tolerations = list (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") }}
  {{- end }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A RayCluster spec (also a RayService's rayClusterConfig). Arguments: root, component, values. */}}
{{- define "orchard.rayClusterSpec" -}}
{{- $root := .root -}}
{{- $v := .values -}}
rayVersion: {{ $v.rayVersion | quote }}
enableInTreeAutoscaling: true
autoscalerOptions:
  upscalingMode: Default
  idleTimeoutSeconds: 120
  resources:
    requests: {cpu: 200m, memory: 256Mi}
    limits: {cpu: 500m, memory: 512Mi}
  securityContext:
    {{- include "orchard.containerSecurityContext" $root | nindent 4 }}
headGroupSpec:
  rayStartParams:
    {{- range $key, $value := $v.head.rayStartParams }}
    {{ $key }}: {{ toString $value | quote }}
    {{- end }}
    metrics-export-port: "8080"
  template:
    {{- include "orchard.rayPodTemplate" (dict "root" $root "component" .component "group" $v.head "head" true "env" (eq .component "training")) | nindent 4 }}
workerGroupSpecs:
  {{- range $v.workerGroups }}
  - groupName: {{ .name }}
    replicas: {{ .replicas }}
    minReplicas: {{ .minReplicas }}
    maxReplicas: {{ .maxReplicas }}
    rayStartParams:
      metrics-export-port: "8080"
    template:
      {{- include "orchard.rayPodTemplate" (dict "root" $root "component" $.component "group" . "head" false "env" (eq $.component "training")) | nindent 6 }}
  {{- end }}
{{- end -}}
