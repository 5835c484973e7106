{{/* Names, labels and derived settings shared by the templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "gremesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name with the chart
name appended unless it already contains it. At most 52 characters, so that suffixes such as
"-leader-election" keep names within 63.
*/}}
{{- define "gremesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pods; never change them on upgrade. */}}
{{- define "gremesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gremesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource of the chart. */}}
{{- define "gremesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gremesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gremesh
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "gremesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gremesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: as set, or when null with more than one replica. */}}
{{- define "gremesh.leaderElection" -}}
{{- $on := .Values.leaderElection.enabled }}
{{- if kindIs "invalid" $on }}
{{- $on = gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/* Name of the Lease, unique per release. */}}
{{- define "gremesh.leaseName" -}}
{{- include "gremesh.fullname" . }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "gremesh.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespace of the SSH key Secret the chart may create. */}}
{{- define "gremesh.sshKeySecretNamespace" -}}
{{- .Values.sshKeySecret.namespace | default .Values.watchNamespace | default .Release.Namespace }}
{{- end }}
