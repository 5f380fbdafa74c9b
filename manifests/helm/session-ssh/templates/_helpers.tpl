{{/*
Labels on every object (metadata only, never in selectors: selectors stay stable
across upgrades, and the webhook's objectSelector keys on app.kubernetes.io/name).
The kustomize manifests set the same two first labels (managed-by: kustomize there).
*/}}
{{- define "session-ssh.labels" -}}
app.kubernetes.io/part-of: session-ssh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The webhook's config file, as the ConfigMap holds it. */}}
{{- define "session-ssh.config" -}}
{{ toYaml .Values.config }}
{{- end }}

{{/* The ConfigMap's name carries a hash of its content, as kustomize's configMapGenerator
does: a config change makes a new ConfigMap and so rolls the Deployment. */}}
{{- define "session-ssh.configName" -}}
session-ssh-config-{{ include "session-ssh.config" . | sha256sum | trunc 10 }}
{{- end }}

{{/* An int field of the webhook config under "ports", or its default (0: null, off). */}}
{{- define "session-ssh.port" -}}
{{- $ports := .root.Values.config.ports | default dict -}}
{{- if hasKey $ports .name -}}{{ int (get $ports .name) }}{{- else -}}{{ .default }}{{- end -}}
{{- end }}

{{/* The host CA Secret the webhook may read (config hostKeys.ca.secretName). */}}
{{- define "session-ssh.hostCaSecret" -}}
{{- $ca := dig "hostKeys" "ca" dict (.Values.config | default dict) -}}
{{- (get ($ca | default dict) "secretName") | default "session-ssh-host-ca" -}}
{{- end }}

{{- define "session-ssh.hostCaNamespace" -}}
{{- $ca := dig "hostKeys" "ca" dict (.Values.config | default dict) -}}
{{- (get ($ca | default dict) "namespace") | default .Release.Namespace -}}
{{- end }}

{{- define "session-ssh.image" -}}
{{ .repository }}:{{ .tag }}
{{- end }}
