//! `celador revoke`, `unrevoke`, `grant`, `ungrant` and `governance`: the
//! fleet's governance store from the command line.
//!
//! Each command connects to the store (`--store` or `CELADOR_STORE`; the
//! password from `--password-file` or `CELADOR_STORE_PASSWORD`), makes one
//! change with its feed record, prints what it did and whom it affects,
//! and writes the change as an audit event (one JSON line on standard
//! error: who, from where, what).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use crate::app::config::parse_duration;
use crate::engine::grants::human;
use crate::engine::redaction;
use crate::engine::time::{parse_rfc3339, rfc3339};
use crate::sources::fleet::StoreSettings;
use crate::sources::fleet::commands::{Change, HeldOutcome, Writer, provenance};
use crate::sources::fleet::entries::{
    StoredGrant, StoredRevocation, StoredSet, check_grant, check_revocation,
};

/// The commands on the store.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Revoke a credential in the fleet's governance store: every celador
    /// replicating it denies it within a second.
    Revoke(RevokeArgs),
    /// Withdraw a revocation from the governance store.
    Unrevoke(UnrevokeArgs),
    /// Grant identities access for a time, in the governance store.
    Grant(GrantArgs),
    /// Remove a grant from the governance store.
    Ungrant(UngrantArgs),
    /// List the governance store's revocations and grants.
    Governance(ListArgs),
}

/// Runs `command`.
pub fn run(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Revoke(args) => revoke(args),
        StoreCommand::Unrevoke(args) => unrevoke(args),
        StoreCommand::Grant(args) => grant(args),
        StoreCommand::Ungrant(args) => ungrant(args),
        StoreCommand::Governance(args) => list(args),
    }
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: redis://HOST:PORT/DB or rediss://HOST:PORT/DB.
    #[arg(long, env = "CELADOR_STORE", value_name = "URL")]
    store: String,
    /// An ACL user.
    #[arg(long, env = "CELADOR_STORE_USERNAME")]
    username: Option<String>,
    /// A file holding the password (else `CELADOR_STORE_PASSWORD`, if set).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// CA certificates (PEM) that verify a rediss:// store.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The keys' prefix, as the sidecars' `governance.key_prefix`.
    #[arg(long, default_value = "celador")]
    key_prefix: String,
    /// Who makes the change, for the audit event (default: $USER).
    #[arg(long)]
    by: Option<String>,
}

impl StoreArgs {
    fn settings(&self) -> StoreSettings {
        let env_password = std::env::var_os("CELADOR_STORE_PASSWORD").is_some();
        StoreSettings {
            url: self.store.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            password_env: (self.password_file.is_none() && env_password)
                .then(|| "CELADOR_STORE_PASSWORD".to_owned()),
            ca_file: self.ca_file.clone(),
            key_prefix: self.key_prefix.clone(),
        }
    }
}

/// `celador revoke`.
#[derive(Debug, Args)]
#[group(id = "what", required = true, multiple = false)]
pub struct RevokeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A SPIFFE ID.
    #[arg(long, group = "what")]
    spiffe_id: Option<String>,
    /// Every SPIFFE ID under this path (a whole namespace).
    #[arg(long, group = "what")]
    spiffe_id_prefix: Option<String>,
    /// A leaf certificate's SHA-256 (64 hex digits, colons allowed).
    #[arg(long, group = "what")]
    x509_sha256: Option<String>,
    /// A JWT-SVID's `jti`.
    #[arg(long, group = "what")]
    jwt_id: Option<String>,
    /// Why (an incident, a ticket).
    #[arg(long)]
    reason: String,
    /// Lapses after this long (`30m`, `2h`); never without it.
    #[arg(long = "for", value_name = "DURATION")]
    lapse: Option<String>,
}

/// `celador unrevoke`: the same selector as `revoke`.
#[derive(Debug, Args)]
#[group(id = "what", required = true, multiple = false)]
pub struct UnrevokeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A SPIFFE ID.
    #[arg(long, group = "what")]
    spiffe_id: Option<String>,
    /// A SPIFFE ID prefix.
    #[arg(long, group = "what")]
    spiffe_id_prefix: Option<String>,
    /// A leaf certificate's SHA-256.
    #[arg(long, group = "what")]
    x509_sha256: Option<String>,
    /// A JWT-SVID's `jti`.
    #[arg(long, group = "what")]
    jwt_id: Option<String>,
}

/// `celador grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The grant's name (unique; the same name replaces it).
    #[arg(long)]
    name: String,
    /// A SPIFFE ID, or a prefix ending in `/` (anyone under it); repeatable.
    #[arg(long = "identity", required = true)]
    identities: Vec<String>,
    /// How long it lasts, from --not-before or now (`2h`, `30m`).
    #[arg(long)]
    duration: String,
    /// Why.
    #[arg(long)]
    reason: String,
    /// A CEL condition, as a grants file's `when`.
    #[arg(long)]
    when: Option<String>,
    /// When it opens (RFC 3339); now without it.
    #[arg(long)]
    not_before: Option<String>,
    /// The longest grant accepted: the sidecars' `grants_max_duration`.
    #[arg(long, default_value = "24h")]
    max_duration: String,
}

/// `celador ungrant`.
#[derive(Debug, Args)]
pub struct UngrantArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The grant's name.
    #[arg(long)]
    name: String,
}

/// `celador governance`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs `work` against the store on a small runtime; 1 on any failure.
fn with_store<F, Fut>(store: &StoreArgs, work: F) -> ExitCode
where
    F: FnOnce(Writer) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain!("celador: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = store.settings();
    let outcome = runtime.block_on(async {
        let writer = Writer::open(&settings, env).await?;
        work(writer).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("celador: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the change's audit event on standard error.
fn audit(change: &Change) {
    let mut event = serde_json::json!({ "type": "governance_change" });
    if let (Some(map), Ok(serde_json::Value::Object(c))) =
        (event.as_object_mut(), serde_json::to_value(change))
    {
        map.extend(c);
    }
    // Redacted as the listing is: a writer's name and a reason are text
    // someone typed or a transmitter sent.
    redact_entry(&mut event);
    complain!("{event}");
}

fn selector(
    spiffe_id: &Option<String>,
    prefix: &Option<String>,
    sha: &Option<String>,
    jti: &Option<String>,
) -> StoredRevocation {
    StoredRevocation {
        spiffe_id: spiffe_id.clone(),
        spiffe_id_prefix: prefix.clone(),
        x509_sha256: sha.as_ref().map(|s| {
            s.chars()
                .filter(|c| *c != ':')
                .collect::<String>()
                .to_ascii_lowercase()
        }),
        jwt_id: jti.clone(),
        ..StoredRevocation::default()
    }
}

/// `celador revoke`.
pub fn revoke(args: RevokeArgs) -> ExitCode {
    let mut entry = selector(
        &args.spiffe_id,
        &args.spiffe_id_prefix,
        &args.x509_sha256,
        &args.jwt_id,
    );
    entry.reason = args.reason.clone();
    if let Some(text) = &args.lapse {
        match parse_duration(text) {
            Ok(d) if !d.is_zero() => entry.expires = Some(rfc3339(SystemTime::now() + d)),
            Ok(_) => return usage("--for: a revocation that lapses at once revokes nothing"),
            Err(e) => return usage(&format!("--for: {e}")),
        }
    }
    entry.provenance = provenance(args.store.by.clone(), env);
    if let Err(e) = check_revocation(
        "the command line",
        &entry.field(),
        &serde_json::to_string(&entry).unwrap_or_default(),
    ) {
        return usage(&e);
    }
    with_store(&args.store, |mut w| async move {
        let field = entry.field();
        let lapses = entry.expires.clone();
        let change = w.revoke(entry).await?;
        let until = lapses.map_or_else(|| "until unrevoked".to_owned(), |t| format!("until {t}"));
        if let HeldOutcome::Behind(tool) = &change.held {
            crate::cli::say(&format!(
                "{field} is revoked in {} by {}'s revocation, which lasts at least as long: yours, {until}, is held behind it and takes its place if that one is withdrawn\n",
                change.store,
                shown(tool)
            ));
            audit(&change);
            return Ok(());
        }
        if let HeldOutcome::NotTouched(e) = &change.held {
            complain!(
                "celador: warning: the revocations held behind the entry were not considered ({}): it was written as before they existed, over another writer's revocation if there was one; {}",
                shown(e),
                held_acl_hint(w.keys())
            );
        }
        let how = match &change.held {
            HeldOutcome::Holds(by) => {
                format!("{}'s, which it outlasts, is held behind it", shown(by))
            }
            _ if change.replaced => "replaced the entry".to_owned(),
            _ => "new entry".to_owned(),
        };
        crate::cli::say(&format!(
            "revoked {field} in {} ({how}), {until}: every celador replicating it denies it (403 revoked) within a second\n",
            change.store,
        ));
        audit(&change);
        Ok(())
    })
}

/// `celador unrevoke`.
pub fn unrevoke(args: UnrevokeArgs) -> ExitCode {
    let field = selector(
        &args.spiffe_id,
        &args.spiffe_id_prefix,
        &args.x509_sha256,
        &args.jwt_id,
    )
    .field();
    let who = provenance(args.store.by.clone(), env);
    with_store(&args.store, |mut w| async move {
        let change = w.unrevoke(field.clone(), who).await?;
        if change.replaced {
            crate::cli::say(&format!(
                "unrevoked {field} in {}: access as the rules say again, within a second\n",
                change.store
            ));
        } else {
            crate::cli::say(&format!(
                "{field} was not revoked in {}: nothing changed (a revocations file may still revoke it)\n",
                change.store
            ));
        }
        match &change.held {
            HeldOutcome::Cleared(n) => crate::cli::say(&format!(
                "withdrew with it {n} revocations held behind it (a security tool that still means it sends its SET again)\n"
            )),
            HeldOutcome::NotTouched(e) => complain!(
                "celador: warning: the revocations held behind {field} were not cleared ({}): one is put in force again if an operator revokes the entry and a longer-lasting one is held, or if a tool revokes it and then withdraws; {}",
                shown(e),
                held_acl_hint(w.keys())
            ),
            HeldOutcome::None | HeldOutcome::Behind(_) | HeldOutcome::Holds(_) => {}
        }
        audit(&change);
        Ok(())
    })
}

/// The longest grant, when it opens and how long it lasts, from the
/// arguments; or what is wrong with them.
fn grant_window(args: &GrantArgs) -> Result<(Duration, Option<SystemTime>, Duration), String> {
    let max = parse_duration(&args.max_duration).map_err(|e| format!("--max-duration: {e}"))?;
    let length = match parse_duration(&args.duration) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return Err("--duration: a grant of no length grants nothing".into()),
        Err(e) => return Err(format!("--duration: {e}")),
    };
    let opens = args
        .not_before
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(|e| format!("--not-before: {e}"))?;
    if length > max {
        return Err(format!(
            "--duration {}: the grant lasts longer than the maximum of {} (grants_max_duration; --max-duration); split it or shorten it",
            human(length),
            human(max)
        ));
    }
    Ok((max, opens, length))
}

/// `celador grant`.
pub fn grant(args: GrantArgs) -> ExitCode {
    let (max, opens, length) = match grant_window(&args) {
        Ok(window) => window,
        Err(e) => return usage(&e),
    };
    let start = opens.unwrap_or_else(SystemTime::now);
    let grant = StoredGrant {
        name: args.name.clone(),
        identities: args.identities.clone(),
        when: args.when.clone(),
        not_before: opens.map(rfc3339),
        expires: rfc3339(start + length),
        reason: args.reason.clone(),
        provenance: provenance(args.store.by.clone(), env),
    };
    let json = serde_json::to_string(&grant).unwrap_or_default();
    // Checked with a second's slack: `expires` is rounded to the second.
    if let Err(e) = check_grant(
        "the command line",
        &grant.name,
        &json,
        max + Duration::from_secs(1),
        SystemTime::now(),
    ) {
        return usage(&e);
    }
    with_store(&args.store, |mut w| async move {
        let (who, from, to) = (
            grant.identities.join(", "),
            rfc3339(start),
            grant.expires.clone(),
        );
        let change = w.grant(grant, max + Duration::from_secs(1)).await?;
        crate::cli::say(&format!(
            "granted {:?} to {who} from {from} to {to} in {} ({}): every celador replicating it allows them what no allow rule does, in that window\n",
            args.name,
            change.store,
            if change.replaced {
                "replaced the grant"
            } else {
                "new grant"
            },
        ));
        audit(&change);
        Ok(())
    })
}

/// `celador ungrant`.
pub fn ungrant(args: UngrantArgs) -> ExitCode {
    let who = provenance(args.store.by.clone(), env);
    with_store(&args.store, |mut w| async move {
        let change = w.ungrant(args.name.clone(), who).await?;
        if change.replaced {
            crate::cli::say(&format!(
                "ungranted {:?} in {}: it allows nothing from now on, within a second\n",
                args.name, change.store
            ));
        } else {
            crate::cli::say(&format!(
                "no grant {:?} in {}: nothing changed\n",
                args.name, change.store
            ));
        }
        audit(&change);
        Ok(())
    })
}

/// `celador governance`: what the store holds.
pub fn list(args: ListArgs) -> ExitCode {
    let json = args.format == "json";
    with_store(&args.store, |mut w| async move {
        let (revocations, grants, held) = w.list().await?;
        let held = match held {
            Ok(held) => held_reports(&held),
            Err(e) => {
                complain!(
                    "celador: warning: the revocations held behind others are not listed ({})",
                    shown(&e)
                );
                Default::default()
            }
        };
        let text = if json {
            json_listing(w.shown(), (&revocations, &grants, &held))
        } else {
            let count: usize = held.values().map(Map::len).sum();
            let head = format!(
                "{}: {} revocations, {} grants{}\n",
                w.shown(),
                revocations.len(),
                grants.len(),
                match count {
                    0 => String::new(),
                    n => format!(", {n} revocations held behind another writer's"),
                }
            );
            head + &listing(w.keys(), &revocations, &grants, &held)
        };
        crate::cli::say(&text);
        Ok(())
    })
}

type Map = std::collections::BTreeMap<String, String>;

/// What a user told that the held revocations were not considered should
/// check: the ACL docs/fleet.md gives the on-call user.
fn held_acl_hint(keys: &crate::sources::fleet::keys::Keys) -> String {
    format!(
        "if this user lacks WATCH, UNWATCH, HGET or {}, give it them (docs/fleet.md)",
        keys.held
    )
}

/// `celador governance --format json`: every entry as stored, redacted
/// ([`redact_members`]); a value that is not JSON as a string.
fn json_listing(
    store: &str,
    (revocations, grants, held): (&Map, &Map, &std::collections::BTreeMap<String, Map>),
) -> String {
    let parse = |raw: &String| {
        serde_json::from_str::<serde_json::Value>(raw).unwrap_or_else(|_| raw.clone().into())
    };
    let all = |map: &Map| -> serde_json::Map<_, _> {
        map.iter().map(|(f, v)| (f.clone(), parse(v))).collect()
    };
    let (mut revocations, mut grants) = (all(revocations), all(grants));
    let mut held: serde_json::Map<_, _> = held
        .iter()
        .map(|(field, reports)| (field.clone(), serde_json::Value::Object(all(reports))))
        .collect();
    for members in [&mut revocations, &mut grants, &mut held] {
        redact_members(members);
    }
    let out = serde_json::json!({
        "store": store,
        "revocations": revocations,
        "grants": grants,
        "held": held,
    });
    format!("{out}\n")
}

/// The held revocations ([`crate::sources::fleet::keys::Keys::held`]) by
/// field, then by transmitter, raw; a field whose value is not such a map
/// is shown as it is under the transmitter `?`.
fn held_reports(held: &Map) -> std::collections::BTreeMap<String, Map> {
    held.iter()
        .map(|(field, raw)| {
            let reports = serde_json::from_str::<Map>(raw)
                .unwrap_or_else(|_| Map::from([("?".to_owned(), raw.clone())]));
            (field.clone(), reports)
        })
        .collect()
}

/// A stored entry (or the listing around it) with every credential-like
/// word replaced, as the audit record's: every string value and every
/// member's name, at any depth ([`redaction::text`]). The store is written
/// by hand and by receivers, so any member may hold a transmitter's or an
/// operator's text (a refused entry's unknown member, an identity or an
/// expiry that is not one, a grant's `when`); a value that is not JSON is
/// shown redacted as a whole. A field's random id (`jwt_id:<jti>`) stays
/// as it is unless it looks like a credential.
fn redact_entry(entry: &mut serde_json::Value) {
    match entry {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(shown) = redaction::text(text) {
                *text = shown;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_entry),
        serde_json::Value::Object(members) => redact_members(members),
        _ => {}
    }
}

/// `members` with their names and values redacted as [`redact_entry`].
fn redact_members(members: &mut serde_json::Map<String, serde_json::Value>) {
    *members = std::mem::take(members)
        .into_iter()
        .map(|(name, mut value)| {
            redact_entry(&mut value);
            (redaction::text(&name).into_owned(), value)
        })
        .collect();
}

/// Free text of an entry, as the listing shows it: [`redaction::text`].
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    redaction::text(text)
}

/// The text-listing part naming a revocation's SET, redacted as
/// [`redact_entry`]; empty for one made by hand.
fn set_shown(set: Option<&StoredSet>) -> String {
    set.map(|s| {
        format!(
            "  set jti {:?} of {:?} from {:?}",
            shown(&s.jti),
            shown(&s.event),
            shown(&s.source)
        )
    })
    .unwrap_or_default()
}

/// The listing's line of the revocation `raw` stored under `field` of
/// `key`,
/// starting with `what` (`revoked`, `  held `); a refused one says why.
fn revocation_line(key: &str, now: SystemTime, (what, field, raw): (&str, &str, &str)) -> String {
    match check_revocation(key, field, raw) {
        Ok(e) => {
            let state = match e.lapses() {
                Some(t) if t <= now => format!("lapsed at {}", rfc3339(t)),
                Some(t) => format!("until {}", rfc3339(t)),
                None => "until unrevoked".into(),
            };
            format!(
                "{what}  {}  {state}  reason {:?}{}  by {} from {} at {}\n",
                shown(field),
                shown(&e.reason),
                set_shown(e.set.as_ref()),
                shown(&e.provenance.by),
                shown(&e.provenance.from),
                shown(&e.provenance.at)
            )
        }
        Err(problem) => format!("REFUSED  {}\n", shown(&problem)),
    }
}

/// One line per stored entry, each held revocation on a line below its
/// entry's; a refused one says why.
fn listing(
    keys: &crate::sources::fleet::keys::Keys,
    revocations: &Map,
    grants: &Map,
    held: &std::collections::BTreeMap<String, Map>,
) -> String {
    let now = SystemTime::now();
    let mut text = String::new();
    let fields: std::collections::BTreeSet<&String> =
        revocations.keys().chain(held.keys()).collect();
    for field in fields {
        if let Some(raw) = revocations.get(field) {
            text.push_str(&revocation_line(
                &keys.revocations,
                now,
                ("revoked", field, raw),
            ));
        }
        for raw in held.get(field).into_iter().flat_map(Map::values) {
            // Held behind the entry above: in force once its writer
            // withdraws it.
            text.push_str(&revocation_line(&keys.held, now, ("  held ", field, raw)));
        }
    }
    for (field, raw) in grants {
        text.push_str(
            &match check_grant(&keys.grants, field, raw, Duration::MAX, now) {
                Ok(g) => format!(
                    "granted  {field}  to {}  {}until {}  reason {:?}  by {} from {} at {}\n",
                    g.identities.join(", "),
                    g.not_before
                        .as_deref()
                        .map(|t| format!("from {t} "))
                        .unwrap_or_default(),
                    g.expires,
                    shown(&g.reason),
                    shown(&g.provenance.by),
                    shown(&g.provenance.from),
                    shown(&g.provenance.at)
                ),
                Err(problem) => format!("REFUSED  {}\n", shown(&problem)),
            },
        );
    }
    text
}

fn usage(problem: &str) -> ExitCode {
    complain!("celador: {problem}");
    ExitCode::from(2)
}
