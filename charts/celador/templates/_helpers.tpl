{{/* The chart's name. */}}
{{- define "celador.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name. */}}
{{- define "celador.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The injector's resource name. */}}
{{- define "celador.injector" -}}
{{- printf "%s-injector" (include "celador.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "celador.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "celador.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: celador
{{- end }}

{{/* The injector's selector labels. */}}
{{- define "celador.injectorSelector" -}}
app.kubernetes.io/name: {{ include "celador.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end }}

{{/* The image reference: the digest when set, else the tag (default appVersion). */}}
{{- define "celador.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The injector's ServiceAccount name. */}}
{{- define "celador.serviceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "celador.injector" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "celador: serviceAccount.create is false, so serviceAccount.name must name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's TLS Secret: the one provided, else the chart's (Helm's or cert-manager's). */}}
{{- define "celador.tlsSecret" -}}
{{- default (printf "%s-tls" (include "celador.injector" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* Namespaces never injected: the values' list and the release's own. */}}
{{- define "celador.excludedNamespaces" -}}
{{- $list := .Values.webhook.excludedNamespaces | default list }}
{{- if not (has .Release.Namespace $list) }}
{{- $list = append $list .Release.Namespace }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/* The injector's settings file (celador inject --config), as JSON. */}}
{{- define "celador.injectorSettings" -}}
{{- $bundle := dict }}
{{- if eq .Values.bundle.source "configMap" }}
{{- $bundle = dict "config_map" (dict "name" .Values.bundle.name "key" .Values.bundle.key) }}
{{- else if eq .Values.bundle.source "secret" }}
{{- $bundle = dict "secret" (dict "name" .Values.bundle.name "key" .Values.bundle.key) }}
{{- else }}
{{- $bundle = dict "workload_api" (dict "csi_driver" .Values.bundle.csiDriver "socket" .Values.bundle.socket) }}
{{- end }}
{{- $config := deepCopy (.Values.sidecar.config | default dict) }}
{{- $governance := dict "config_map" .Values.governance.configMapName }}
{{- with .Values.governance.store }}
{{- if .url }}
{{- $store := dict "store" .url "key_prefix" .keyPrefix "startup_wait" .startupWait "signals_interval" .signalsInterval }}
{{- if .username }}{{- $_ := set $store "username" .username }}{{- end }}
{{- /* Merged into sidecar.config.governance (its grants, signals, ...), not over it. */}}
{{- $_ := set $config "governance" (merge $store (get $config "governance" | default dict)) }}
{{- if .passwordSecret.name }}
{{- $_ := set $governance "store_password" (dict "name" .passwordSecret.name "key" .passwordSecret.key) }}
{{- end }}
{{- if .ca.configMap }}
{{- $_ := set $governance "store_ca" (dict "config_map" (dict "name" .ca.configMap "key" .ca.key)) }}
{{- else if .ca.secret }}
{{- $_ := set $governance "store_ca" (dict "secret" (dict "name" .ca.secret "key" .ca.key)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $settings := dict
  "image" (include "celador.image" .)
  "image_pull_policy" .Values.image.pullPolicy
  "rules" (dict "config_map" .Values.rules.configMapName "key" .Values.rules.key)
  "governance" $governance
  "trust_domain" .Values.trustDomain
  "bundle" $bundle
  "excluded_namespaces" (include "celador.excludedNamespaces" . | fromJsonArray)
  "resources" .Values.sidecar.resources
  "ports" .Values.sidecar.ports
  "run_as_user" .Values.sidecar.runAsUser
  "security_context" (.Values.sidecar.securityContext | default dict)
  "config" $config
  "log" (dict "level" .Values.injector.logLevel "format" "json")
  "istio" .Values.istio.enabled
}}
{{- toPrettyJson $settings }}
{{- end }}

{{/* The EnvoyFilter's patches (also used by the README's Istio example). */}}
{{- define "celador.istioPatches" -}}
- applyTo: HTTP_FILTER
  match:
    context: SIDECAR_INBOUND
    listener:
      filterChain:
        filter:
          name: envoy.filters.network.http_connection_manager
          subFilter:
            name: envoy.filters.http.ext_authz
  patch:
    operation: MERGE
    value:
      name: envoy.filters.http.ext_authz
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
        include_peer_certificate: true
        {{- if not .Values.istio.sendAllHeaders }}
        # Only the headers celador reads (Istio sends every one otherwise).
        allowed_headers:
          patterns:
            {{- range (include "celador.checkHeaders" . | fromJsonArray) }}
            - exact: {{ . | quote }}
            {{- end }}
        {{- end }}
# Envoy's HTTP/2 flood limits on its connection to celador, raised: Envoy
# sends a RST_STREAM for every check whose client goes away, and with the
# defaults (10,000 frames, 1,000 control frames) a burst of cancellations
# makes Envoy close the connection itself, failing every check in flight on
# it (allowed under failOpen). The cluster is the one Istio generates for the
# ServiceEntry's host and port.
- applyTo: CLUSTER
  match:
    context: SIDECAR_OUTBOUND
    cluster:
      service: {{ .Values.istio.providerHost | quote }}
      portNumber: {{ .Values.sidecar.ports.grpc }}
  patch:
    operation: MERGE
    value:
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              max_outbound_frames: 100000
              max_outbound_control_frames: 100000
{{- if .Values.istio.forwardChain }}
# The client's chain in x-forwarded-client-cert (Hash= ties it to the peer
# certificate), replacing any element a client sent.
- applyTo: NETWORK_FILTER
  match:
    context: SIDECAR_INBOUND
    listener:
      filterChain:
        filter:
          name: envoy.filters.network.http_connection_manager
  patch:
    operation: MERGE
    value:
      name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        forward_client_cert_details: SANITIZE_SET
        set_current_client_cert_details:
          uri: true
          chain: true
{{- end }}
{{- end }}

{{/* The request headers Envoy sends celador in each check under Istio, as
     `celador envoy-config` computes allowed_headers: the ones celador's
     config reads (x-forwarded-client-cert, the JWT-SVID's header, the
     audited ones) and the ones the rules read (istio.ruleHeaders). A JSON
     list, sorted, lowercase. Istio's envoyExtAuthzGrpc provider has no
     includeRequestHeadersInCheck (only envoyExtAuthzHttp has), so the
     EnvoyFilter sets them. */}}
{{- define "celador.checkHeaders" -}}
{{- $headers := list "x-forwarded-client-cert" }}
{{- $config := .Values.sidecar.config | default dict }}
{{- $identity := get $config "identity" | default dict }}
{{- if hasKey $identity "jwt" }}
{{- $jwt := get $identity "jwt" | default dict }}
{{- $headers = append $headers (get $jwt "header" | default "authorization") }}
{{- end }}
{{- $audit := get $config "audit" | default dict }}
{{- range (get $audit "headers" | default list) }}
{{- $headers = append $headers . }}
{{- end }}
{{- range .Values.istio.ruleHeaders }}
{{- $headers = append $headers . }}
{{- end }}
{{- $lower := list }}
{{- range $headers }}
{{- $lower = append $lower (lower .) }}
{{- end }}
{{- toJson ($lower | uniq | sortAlpha) }}
{{- end }}

{{/* The meshConfig.extensionProviders entry Istio needs (printed by NOTES). */}}
{{- define "celador.meshConfig" -}}
meshConfig:
  extensionProviders:
    - name: {{ .Values.istio.providerName }}
      envoyExtAuthzGrpc:
        service: {{ .Values.istio.providerHost }}
        port: {{ .Values.sidecar.ports.grpc }}
        timeout: {{ .Values.istio.timeout | quote }}
        failOpen: false
{{- end }}

{{/* The signals receiver's selector labels. */}}
{{- define "celador.signalsSelector" -}}
app.kubernetes.io/name: {{ include "celador.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: signals
{{- end }}

{{/* The signals receiver's name. */}}
{{- define "celador.signals" -}}
{{- printf "%s-signals" (include "celador.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret (name and key) holding the receiver's store password:
     signals.store.passwordSecret, else governance.store.passwordSecret;
     empty: none. */}}
{{- define "celador.signalsPassword" -}}
{{- $secret := .Values.signals.store.passwordSecret }}
{{- if not $secret.name }}{{- $secret = .Values.governance.store.passwordSecret }}{{- end }}
{{- if $secret.name }}{{- toJson $secret }}{{- end }}
{{- end }}

{{/* The signals receiver's config file: signals.config, with the listener,
     the certificate and the sink (the governance store) set by the chart. */}}
{{- define "celador.signalsConfig" -}}
{{- $store := .Values.governance.store }}
{{- $sink := dict "store" (required "celador: signals.enabled needs governance.store.url: the receiver writes into the fleet's governance store" $store.url) "key_prefix" $store.keyPrefix }}
{{- $username := .Values.signals.store.username | default $store.username }}
{{- if $username }}{{- $_ := set $sink "username" $username }}{{- end }}
{{- if include "celador.signalsPassword" . }}{{- $_ := set $sink "password_env" "CELADOR_STORE_PASSWORD" }}{{- end }}
{{- if or $store.ca.configMap $store.ca.secret }}{{- $_ := set $sink "ca_file" "store-ca.pem" }}{{- end }}
{{- $config := deepCopy .Values.signals.config }}
{{- $_ := set $config "listen" (printf "0.0.0.0:%v" .Values.signals.port) }}
{{- $_ := set $config "tls" (dict "cert" "tls.crt" "key" "tls.key" "reload_interval" .Values.signals.tls.reloadInterval) }}
{{- $_ := set $config "sink" $sink }}
{{- $_ := set $config "log" (dict "format" "json" "level" .Values.signals.logLevel) }}
{{- toYaml $config }}
{{- end }}
