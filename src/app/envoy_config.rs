//! `celador envoy-config`: the ext_authz filter block that suits the loaded
//! rules.
//!
//! Data flow: the config's rules (with the shadow rules and the grants'
//! conditions) are loaded as `serve` loads them; the headers they can read,
//! taken from their footprints ([`crate::engine::policy::footprint`]), plus
//! the headers celador itself reads (the XFCC chain, the JWT-SVID's header,
//! the audited headers) become the filter's `allowed_headers`, so that Envoy
//! builds and sends no header celador does not need, but for the client's
//! `x-celador-*` headers, which celador removes. The rest of the block
//! is what celador requires of every deployment: the peer certificate, and
//! no fail-open.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::config::Config;
use crate::engine::policy::footprint::{Footprint, Part};

/// What the filter is rendered from.
#[derive(Debug, Clone)]
pub struct FilterSettings {
    /// The Envoy cluster celador is.
    pub cluster: String,
    /// The gRPC timeout, as Envoy writes durations (`0.5s`).
    pub timeout: String,
}

/// The headers Envoy must send for `footprints` under `config`; `None` when
/// a rule reads the whole header map, so every header must be sent.
pub fn headers_needed(config: &Config, footprints: &[&Footprint]) -> Option<BTreeSet<String>> {
    let mut headers = BTreeSet::from(["x-forwarded-client-cert".to_owned()]);
    if let Some(jwt) = &config.identity.jwt {
        headers.insert(jwt.header.clone());
    }
    headers.extend(config.audit.headers.iter().cloned());
    for footprint in footprints {
        for part in &footprint.parts {
            match part {
                Part::Headers => return None,
                Part::Header(name) => {
                    headers.insert(name.to_ascii_lowercase());
                }
                // `request.size` comes from the request's content-length.
                Part::Size => {
                    headers.insert("content-length".into());
                }
                _ => {}
            }
        }
    }
    Some(headers)
}

/// The ext_authz HTTP filter, as YAML for `http_filters`, with comments.
pub fn render(
    settings: &FilterSettings,
    headers: Option<&BTreeSet<String>>,
    rules_version: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# celador's ext_authz filter for rules version {rules_version}, from `celador envoy-config`.\n# Place it in the HTTP connection manager's http_filters, before the router."
    );
    let _ = write!(
        out,
        r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service:
      envoy_grpc:
        cluster_name: {cluster}
      timeout: {timeout}
    # Forward the client's leaf certificate: celador verifies it.
    include_peer_certificate: true
    # An error or timeout of celador denies the request (403); celador
    # itself answers every check it receives, denials included.
    failure_mode_allow: false
    # No rule reads the request body, so Envoy does not buffer it.
"#,
        cluster = settings.cluster,
        timeout = settings.timeout,
    );
    match headers {
        None => out.push_str(
            "    # A rule reads the whole header map (request.headers), so every\n    # header is sent.\n",
        ),
        Some(headers) => {
            out.push_str(
                "    # Only the headers celador reads: the rules', the XFCC chain, the\n    # JWT-SVID's and the audited ones. Regenerate when the rules change.\n    # And any x-celador-* a client sent, which celador removes.\n    allowed_headers:\n      patterns:\n",
            );
            for header in headers {
                let _ = writeln!(out, "      - exact: {header}");
            }
            let _ = writeln!(
                out,
                "      - prefix: {}",
                crate::edge::response::OWN_HEADER_PREFIX
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::Policy;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!(
                "listen: 127.0.0.1:9191\npolicy: p.yaml\ntrust_domains:\n  example.org:\n    bundle: e.pem\n{extra}"
            ),
            Path::new("c.yaml"),
        )
        .unwrap()
    }

    fn footprint(rules: &str) -> Footprint {
        Policy::parse(rules, Path::new("p.yaml"))
            .unwrap()
            .footprint()
            .clone()
    }

    #[test]
    fn allowed_headers_are_exactly_those_read_and_none_when_all_are() {
        let config = config(
            "identity:\n  jwt:\n    header: x-agent-token\n    audiences: [a]\naudit:\n  headers: [user-agent]\n",
        );
        let keyed = footprint(
            "rules:\n  - name: r\n    effect: allow\n    when: request.headers[\"x-tenant\"] == \"acme\" && has(request.headers.x_b) && request.size < 10\n",
        );
        let headers = headers_needed(&config, &[&keyed]).unwrap();
        let names: Vec<&str> = headers.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "content-length",
                "user-agent",
                "x-agent-token",
                "x-forwarded-client-cert",
                "x-tenant",
                "x_b"
            ]
        );
        let text = render(
            &FilterSettings {
                cluster: "celador".into(),
                timeout: "0.5s".into(),
            },
            Some(&headers),
            "v1",
        );
        assert!(text.contains("      - exact: x-tenant\n"), "{text}");
        assert!(text.contains("      - prefix: x-celador-\n"), "{text}");
        assert!(text.contains("include_peer_certificate: true"), "{text}");
        assert!(text.contains("failure_mode_allow: false"), "{text}");
        let whole = footprint(
            "rules:\n  - name: r\n    effect: allow\n    when: request.headers.exists(k, k.startsWith(\"x-\"))\n",
        );
        assert_eq!(headers_needed(&config, &[&keyed, &whole]), None);
        let text = render(
            &FilterSettings {
                cluster: "authz".into(),
                timeout: "1s".into(),
            },
            None,
            "v2",
        );
        assert!(!text.contains("allowed_headers"), "{text}");
        assert!(text.contains("cluster_name: authz"), "{text}");
    }
}
