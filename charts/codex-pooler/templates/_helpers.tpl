{{/*
Names, labels, the image reference, the shared pod parts and the environment every pooler
container gets. The environment is the chart's contract with pooler/config.py:
tests/unit/test_helm_chart.py checks that each variable set here is one pooler reads.
*/}}

{{- define "codex-pooler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "codex-pooler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "codex-pooler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codex-pooler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codex-pooler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "codex-pooler.labels" -}}
helm.sh/chart: {{ include "codex-pooler.chart" . }}
{{ include "codex-pooler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "codex-pooler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codex-pooler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image, by tag (required, never `latest`: the schema refuses it too) and digest. */}}
{{- define "codex-pooler.image" -}}
{{- $tag := required "image.tag is required (the tag you built and pushed; not latest)" .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must name a fixed image, not latest" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The port pooler listens on inside the pod (CODEX_POOLER_HTTP_PORT). */}}
{{- define "codex-pooler.containerPort" -}}4000{{- end -}}

{{/* The web pods' stop timeout: preStop sleep + drain + a margin, or the value given,
which must leave room for both. */}}
{{- define "codex-pooler.webGracePeriod" -}}
{{- $preStop := int .Values.web.preStopSleepSeconds -}}
{{- $drain := int .Values.config.drainSeconds -}}
{{- $needed := add $preStop $drain 5 -}}
{{- if kindIs "invalid" .Values.web.terminationGracePeriodSeconds -}}
{{- add $preStop $drain 10 -}}
{{- else -}}
{{- $given := int .Values.web.terminationGracePeriodSeconds -}}
{{- if lt $given $needed -}}
{{- fail (printf "web.terminationGracePeriodSeconds (%d) must be at least web.preStopSleepSeconds + config.drainSeconds + 5 (%d), or pods are killed mid-drain" $given $needed) -}}
{{- end -}}
{{- $given -}}
{{- end -}}
{{- end -}}

{{/* The environment of every pooler container; the argument is a dict with "root" (the
chart's context) and "role". Secrets come only from the existing Secret. */}}
{{- define "codex-pooler.env" -}}
{{- $root := .root -}}
{{- $secret := required "existingSecret is required: the name of a Secret holding DATABASE_URL, CODEX_POOLER_SECRET_KEY and CODEX_POOLER_UPSTREAM_SECRET_KEY" $root.Values.existingSecret -}}
- name: CODEX_POOLER_ROLE
  value: {{ .role | quote }}
- name: CODEX_POOLER_HOST
  value: "0.0.0.0"
- name: CODEX_POOLER_HTTP_PORT
  value: {{ include "codex-pooler.containerPort" $root | quote }}
- name: CODEX_POOLER_DATA_DIR
  value: /data
- name: CODEX_POOLER_LOG_LEVEL
  value: {{ $root.Values.config.logLevel | quote }}
- name: CODEX_POOLER_DRAIN_SECONDS
  value: {{ $root.Values.config.drainSeconds | int | quote }}
{{- with $root.Values.config.upstreamBaseUrl }}
- name: CODEX_POOLER_UPSTREAM_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.config.authBaseUrl }}
- name: CODEX_POOLER_AUTH_BASE_URL
  value: {{ . | quote }}
{{- end }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $root.Values.secretKeys.databaseUrl | quote }}
- name: CODEX_POOLER_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $root.Values.secretKeys.secretKey | quote }}
- name: CODEX_POOLER_UPSTREAM_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $root.Values.secretKeys.upstreamSecretKey | quote }}
{{- with $root.Values.secretKeys.upstreamSecretKeysOld }}
- name: CODEX_POOLER_UPSTREAM_SECRET_KEYS_OLD
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ . | quote }}
      optional: true
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable dirs under a read-only root filesystem. With DATABASE_URL and both keys set
pooler writes nothing to its data dir (it only resolves the path) and spools no upload to
disk; the two small emptyDirs are for anything a library writes (Python's tempfile). */}}
{{- define "codex-pooler.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "codex-pooler.volumes" -}}
- name: data
  emptyDir:
    sizeLimit: 64Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "codex-pooler.podCommon" -}}
serviceAccountName: {{ include "codex-pooler.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
