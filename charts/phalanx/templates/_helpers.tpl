{{/* The labels every object carries; the Deployment's selector and the Service's are the
same two, so a pod of the chart is exactly what they select. */}}
{{- define "phalanx.selectorLabels" -}}
app.kubernetes.io/name: phalanx
app.kubernetes.io/component: scheduler
{{- end }}

{{- define "phalanx.labels" -}}
{{ include "phalanx.selectorLabels" . }}
{{- end }}

{{/* The scheduler's config file: the `config` value, with the Lease in the chart's own
namespace (the leader-election Role is there). Rendered once for the ConfigMap and once
for the Deployment's checksum annotation. */}}
{{- define "phalanx.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config.leaderElection "namespace" .Values.namespace.name -}}
{{- toYaml $config -}}
{{- end }}

{{/* The container port: the port of config.http.secureAddress, so the two never differ. */}}
{{- define "phalanx.securePort" -}}
{{- .Values.config.http.secureAddress | splitList ":" | last -}}
{{- end }}
