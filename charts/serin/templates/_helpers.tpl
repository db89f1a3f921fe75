{{/*
The namespace of every namespaced object: serin-system, and only there. The webhook
configurations, the admission policies (CEL that names Serin's username) and Serin's own
defaults name it, as in the kustomize base, so another release namespace is refused by
install, upgrade and template instead of installing a Serin whose webhooks point elsewhere.
`helm lint` (neither install nor upgrade) renders in any namespace, as chart tools run it.
*/}}
{{- define "serin.namespace" -}}
{{- if and (or .Release.IsInstall .Release.IsUpgrade) (ne .Release.Namespace "serin-system") -}}
{{- fail (printf "Serin's chart installs into the namespace serin-system only (the webhooks, the admission policies and Serin's defaults name it), not %q: use --namespace serin-system" .Release.Namespace) -}}
{{- end -}}
serin-system
{{- end -}}

{{/*
Labels of every object: the base's app.kubernetes.io/name, then what Helm charts
conventionally add (tests/e2e_chart.rs drops exactly these four when comparing with the
kustomize base). Selectors and the pod template carry the base's label only.
*/}}
{{- define "serin.labels" -}}
app.kubernetes.io/name: serin
{{ include "serin.helmLabels" . }}
{{- end -}}

{{- define "serin.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/*
With certificates: cert-manager, cainjector copies the CA of the serving Certificate into
the caBundle of the objects carrying this annotation (the webhook configurations and the
CRDs' conversion settings), as overlays/cert-manager/inject-ca.yaml does.
*/}}
{{- define "serin.injectCA" -}}
{{- if eq .Values.certificates "cert-manager" -}}
cert-manager.io/inject-ca-from: {{ include "serin.namespace" . }}/serin-serving
{{- end -}}
{{- end -}}
