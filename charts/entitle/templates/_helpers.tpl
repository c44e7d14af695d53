{{/* Names. */}}
{{- define "entitle.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "entitle.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "entitle.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "entitle.serviceName" -}}{{ include "entitle.fullname" . }}-webhook{{- end -}}
{{- define "entitle.tlsSecret" -}}
{{- .Values.webhook.generated.secretName | default (printf "%s-webhook-tls" (include "entitle.fullname" .)) -}}
{{- end -}}


{{/*
The admissionregistration API version of the usage-finalizer MutatingAdmissionPolicy, or
nothing when the mutating webhook adds the finalizer (webhook.usageFinalizer).
*/}}
{{- define "entitle.usageFinalizerAPI" -}}
{{- $mode := .Values.webhook.usageFinalizer | default "auto" -}}
{{- if ne $mode "webhook" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" -}}
admissionregistration.k8s.io/v1
{{- else if or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy") (eq $mode "policy") -}}
admissionregistration.k8s.io/v1beta1
{{- end -}}
{{- end -}}
{{- end }}
