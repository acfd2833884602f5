//! `celador eval`: one input, every rule's result, and every attribute the
//! rules read.
//!
//! Data flow: the input is either a test case (the form of `celador test`)
//! or a real Envoy `CheckRequest` in JSON, replayed exactly: the same
//! attributes code reads it, and its identities come from its certificate
//! and bearer token. They are read, not verified (eval explains rules, not
//! trust), and the explanation says so. With the request's own time as
//! `now`, time-based rules replay as they ran.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::authoring::governance::Governance;
use crate::authoring::suite::case::{Case, svid_from_der};
use crate::authoring::suite::{Outcome, describe};
use crate::engine::attributes::Attributes;
use crate::engine::identity::SpiffeId;
use crate::engine::identity::X509Svid;
use crate::engine::identity::jwt::{self, JwtSvid};
use crate::engine::policy::{Input, Policy, RuleResult};
use crate::engine::redaction::Redaction;
use crate::engine::workload::Workload;

/// An attribute's value, as CEL text and as typed JSON, or why it has none.
pub type AttributeValue = Result<(String, Value), String>;

/// What `eval` found.
#[derive(Debug)]
pub struct Evaluation {
    /// What the input was.
    pub input: String,
    /// How the identities were obtained.
    pub identities: Vec<String>,
    /// The rules file's version.
    pub policy_version: String,
    /// Each rule: name, effect, result.
    pub rules: Vec<(String, &'static str, RuleResult)>,
    /// The decision in words.
    pub decision: String,
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Every attribute the rules read, with its value (as CEL text and as
    /// typed JSON) or why it has none.
    pub attributes: Vec<(String, AttributeValue)>,
    /// For a test case with `expect`: whether the decision met it.
    pub expectation: Option<crate::authoring::suite::Outcome>,
    /// Why, down to the clause.
    pub why: crate::authoring::clauses::Why,
}

/// Explains the decision of `rules` on `input`, showing what the default
/// [`Redaction`] lets be shown.
pub fn evaluate(rules: &Path, input: &Path) -> Result<Evaluation, String> {
    evaluate_redacting(rules, input, &Redaction::default())
}

/// Explains the decision of `rules` on `input`, showing what `redaction`
/// lets be shown (see [`crate::engine::redaction`]).
pub fn evaluate_redacting(
    rules: &Path,
    input: &Path,
    redaction: &Redaction,
) -> Result<Evaluation, String> {
    evaluate_governed(rules, input, redaction, &Governance::default())
}

/// Explains the decision of `rules` on `input` with `governance` (grants,
/// revocations, signals) in force, as `serve` would decide it.
pub fn evaluate_governed(
    rules: &Path,
    input: &Path,
    redaction: &Redaction,
    governance: &Governance,
) -> Result<Evaluation, String> {
    let policy = crate::authoring::read_policy(rules).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let envoy = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v.get("attributes").is_some());
    let record = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v.get("decision").is_some() && v.get("method").is_some());
    if record.is_some() {
        return evaluate_record(&policy, &text, (redaction, governance));
    }
    match envoy {
        Some(json) => evaluate_check_request(&policy, &json, (redaction, governance)),
        None => {
            let case: Case =
                crate::engine::yaml::from_str(&text, input).map_err(|e| e.to_string())?;
            let base = input.parent().unwrap_or(Path::new("."));
            let prepared = case.prepare(base)?;
            let mut identities = Vec::new();
            if let Some(s) = &prepared.source {
                identities.push(format!("source: {} (as the case gives it)", s.id));
            }
            if let Some(t) = &prepared.token {
                identities.push(format!("token: {} (as the case gives it)", t.id));
            }
            let attrs = prepared.request.attributes();
            let input = prepared.input(&attrs);
            let name = case.name.as_deref().unwrap_or("unnamed");
            let expected_rule = case.expect.as_ref().and_then(|e| e.rule.as_deref());
            let mut explanation = run(
                (redaction, governance),
                &policy,
                format!("a test case ({name})"),
                identities,
                (input, expected_rule),
            );
            explanation.expectation = case.expect.as_ref().map(|expect| {
                let mut decision = governance.decide(&policy, input);
                redaction.decision(&mut decision, &attrs);
                crate::authoring::suite::judge(expect, &decision)
            });
            Ok(explanation)
        }
    }
}

/// Explains an audit record line re-decided: its identities as recorded
/// (verified then), `now` its decision time. A record that does not hold
/// what the rules read is refused, with what it lacks.
fn evaluate_record(
    policy: &Policy,
    line: &str,
    (redaction, governance): (&Redaction, &Governance),
) -> Result<Evaluation, String> {
    let recorded = crate::authoring::record::Recorded::parse(line.trim())?;
    let missing = recorded.missing(policy);
    if !missing.is_empty() {
        return Err(format!(
            "the audit record does not hold what these rules read: {} (record with `audit.record: all` to replay any rules)",
            missing.join(", ")
        ));
    }
    let mut identities = Vec::new();
    if let Some(s) = &recorded.source {
        identities.push(format!("source: {} (as recorded; verified then)", s.id));
    }
    if let Some(t) = &recorded.token {
        identities.push(format!("token: {} (as recorded; verified then)", t.id));
    }
    let attrs = recorded.request.attributes();
    let (workload, none) = (
        Workload::default(),
        crate::engine::signals::Signals::default(),
    );
    let old = &recorded.old;
    Ok(run(
        (redaction, governance),
        policy,
        format!(
            "an audit record (now = its decision time; recorded: {} {})",
            old.decision, old.reason
        ),
        identities,
        (recorded.input(&attrs, &workload, &none), None),
    ))
}

/// The JWT-SVID in the `authorization` header, read but not verified,
/// noting what was found in `identities`.
fn token_of(attrs: &Attributes<'_>, identities: &mut Vec<String>) -> Option<JwtSvid> {
    match attrs
        .header("authorization")
        .map(|v| jwt::token_in_header("authorization", v))
    {
        Some(Ok(Some(token))) => match read_token(token) {
            Ok(t) => {
                identities.push(format!(
                    "token: {} (read from the authorization header; not verified against a bundle)",
                    t.id
                ));
                Some(t)
            }
            Err(e) => {
                identities.push(format!("token: none ({e})"));
                None
            }
        },
        _ => None,
    }
}

fn evaluate_check_request(
    policy: &Policy,
    json: &Value,
    (redaction, governance): (&Redaction, &Governance),
) -> Result<Evaluation, String> {
    let request = crate::authoring::json::check_request(json)?;
    let attrs = crate::edge::request::attributes(&request).map_err(|e| e.to_string())?;
    let mut identities = Vec::new();
    let source = if attrs.source_certificate.is_empty() {
        identities.push("source: none (no source.certificate)".into());
        None
    } else {
        match certificate_identity(attrs.source_certificate) {
            Ok(svid) => {
                identities.push(format!(
                    "source: {} (read from source.certificate; not verified against a bundle)",
                    svid.id
                ));
                Some(svid)
            }
            Err(e) => {
                identities.push(format!("source: none ({e})"));
                None
            }
        }
    };
    let token = token_of(&attrs, &mut identities);
    let now = attrs.time.unwrap_or_else(SystemTime::now);
    Ok(run(
        (redaction, governance),
        policy,
        "an Envoy CheckRequest (now = its request time)".into(),
        identities,
        (
            Input {
                source: source.as_ref(),
                token: token.as_ref(),
                attributes: &attrs,
                workload: &Workload::default(),
                now,
                grant: None,
                signals: &crate::engine::signals::Signals::default(),
            },
            None,
        ),
    ))
}

fn run(
    (redaction, governance): (&Redaction, &Governance),
    policy: &Policy,
    input_kind: String,
    identities: Vec<String>,
    (input, expected_rule): (Input<'_>, Option<&str>),
) -> Evaluation {
    governance.decide_then(policy, input, |mut decision, input| {
        redaction.decision(&mut decision, input.attributes);
        let rules = rule_results(policy, input, redaction);
        let leaves = leaves(policy);
        // Rules see the real request; the attributes shown never hold a
        // credential.
        let shown = redaction.shown(input.attributes);
        let shown_attrs = shown.attributes();
        let shown = Input {
            attributes: &shown_attrs,
            ..input
        };
        let values = policy.values(&leaves, shown);
        let why = crate::authoring::clauses::explain(
            policy,
            &decision,
            expected_rule,
            (input, shown),
            redaction,
        );
        Evaluation {
            input: input_kind,
            identities,
            policy_version: policy.version().to_owned(),
            rules,
            decision: describe(&decision),
            allowed: decision.allowed,
            attributes: leaves.iter().map(|l| (*l).to_owned()).zip(values).collect(),
            expectation: None,
            why,
        }
    })
}

/// The attributes the rules of `policy` read, leaves only: `request` is
/// read whenever `request.method` is.
fn leaves(policy: &Policy) -> Vec<&str> {
    let mut reads: Vec<&str> = policy
        .rules()
        .iter()
        .flat_map(|r| r.reads.iter().map(String::as_str))
        .collect();
    reads.sort_unstable();
    reads.dedup();
    reads
        .iter()
        .copied()
        .filter(|r| {
            !reads.iter().any(|o| {
                o.len() > r.len() && o.starts_with(r) && o.as_bytes().get(r.len()) == Some(&b'.')
            })
        })
        .collect()
}

/// Each rule's result, its error as `redaction` lets it be shown.
fn rule_results(
    policy: &Policy,
    input: Input<'_>,
    redaction: &Redaction,
) -> Vec<(String, &'static str, RuleResult)> {
    policy
        .evaluate_all(input)
        .into_iter()
        .map(|(rule, result)| {
            let result = match result {
                RuleResult::Error(e) => {
                    RuleResult::Error(redaction.message(&e, input.attributes).into_owned())
                }
                other => other,
            };
            (rule.name.to_string(), rule.effect.as_str(), result)
        })
        .collect()
}

fn certificate_identity(certificate: &str) -> Result<X509Svid, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = crate::engine::percent::decode(certificate, false)
        .ok_or("source.certificate is not URL-encoded")?;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("source.certificate: {e}"))?;
    svid_from_der(&der)
}

/// A token's claims, unverified.
fn read_token(token: &str) -> Result<JwtSvid, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the token is not a compact JWS")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the token's payload is not base64url")?;
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| "the token's payload is not a JSON object")?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or("the token has no sub")?;
    let id = SpiffeId::parse(sub).map_err(|e| format!("sub {sub:?}: {e}"))?;
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    Ok(JwtSvid {
        id,
        audience,
        expiry: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(exp),
        claims,
    })
}

/// The explanation for people.
pub fn render_text(e: &Evaluation) -> String {
    let mut out = format!("input: {}\n", e.input);
    for identity in &e.identities {
        out.push_str(&format!("  {identity}\n"));
    }
    out.push_str(&format!("rules (version {}):\n", e.policy_version));
    let width = e.rules.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    for (name, effect, result) in &e.rules {
        let shown = match result {
            RuleResult::Match => "match".to_owned(),
            RuleResult::NoMatch => "no match".to_owned(),
            RuleResult::Error(why) => format!("error: {why}"),
        };
        out.push_str(&format!("  {effect:<5} {name:<width$}  {shown}\n"));
    }
    out.push_str(&format!("decision: {}\n", e.decision));
    match &e.expectation {
        Some(Outcome::Passed) => out.push_str("expected: as the case expects\n"),
        Some(Outcome::Failed { expected, got, .. }) => {
            out.push_str(&format!(
                "expected: {expected}, NOT as the case expects (got {got})\n"
            ));
        }
        Some(Outcome::Error(why)) => out.push_str(&format!("expected: cannot compare: {why}\n")),
        None => {}
    }
    if !e.why.rules.is_empty() || !e.why.other_errors.is_empty() {
        out.push_str("why:\n");
        out.push_str(&crate::authoring::clauses::render_text(&e.why, "  "));
    }
    out.push_str("attributes read:\n");
    for (path, value) in &e.attributes {
        match value {
            Ok((v, _)) => out.push_str(&format!("  {path} = {v}\n")),
            Err(why) => out.push_str(&format!("  {path}: {why}\n")),
        }
    }
    out
}

/// The explanation as JSON.
pub fn render_json(e: &Evaluation) -> Value {
    json!({
        "input": e.input,
        "identities": e.identities,
        "policy_version": e.policy_version,
        "decision": if e.allowed { "allow" } else { "deny" },
        "verdict": e.decision,
        "expectation": match &e.expectation {
            None => Value::Null,
            Some(Outcome::Passed) => json!({"met": true}),
            Some(Outcome::Failed { expected, got, .. }) => json!({"met": false, "expected": expected, "got": got}),
            Some(Outcome::Error(why)) => json!({"met": false, "error": why}),
        },
        "why": crate::authoring::clauses::render_json(&e.why),
        "rules": e.rules.iter().map(|(name, effect, result)| {
            let (result, error) = match result {
                RuleResult::Match => ("match", None),
                RuleResult::NoMatch => ("no_match", None),
                RuleResult::Error(why) => ("error", Some(why.clone())),
            };
            json!({"name": name, "effect": effect, "result": result, "error": error})
        }).collect::<Vec<_>>(),
        "attributes": e.attributes.iter().map(|(path, value)| match value {
            Ok((_, v)) => json!({"path": path, "value": v}),
            Err(why) => json!({"path": path, "error": why}),
        }).collect::<Vec<_>>(),
    })
}
