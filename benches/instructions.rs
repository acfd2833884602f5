//! Instructions per check, counted by callgrind rather than timed: the
//! in-process cases of `check.rs` (the same setup, `support/setup.rs`), each
//! run a given number of times by `scripts/instructions.sh`. A count does
//! not move with the machine's load as a time does, so two builds compare
//! to a fraction of a percent on a shared machine; it does not see what a
//! time sees of caches, branches and code layout, so the two go together.
//!
//! Run bare (as `cargo test --all-targets` does), it runs every case once
//! and checks its verdict.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "../tests/support/check.rs"]
mod check;
#[path = "../tests/support/pki.rs"]
mod pki;
#[path = "support/setup.rs"]
mod setup;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use celador::edge::ExtAuthz;
use celador::engine::policy::{Input, Policy};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

/// The cases, by the names `check.rs` gives them.
const CASES: &[&str] = &[
    "check/allowed",
    "check/denied_no_allow_rule",
    "check/denied_by_rule_regex",
    "kubernetes/string_equals",
    "kubernetes/in_cidr_literal",
    "kubernetes/two_variable_exists",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--case") {
        Some(i) => {
            let iterations = args
                .iter()
                .position(|a| a == "--iterations")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .expect("--iterations N");
            run(&args[i + 1], iterations);
        }
        None => {
            for case in CASES {
                run(case, 1);
            }
            println!(
                "instructions: every case decides as expected; counts: scripts/instructions.sh"
            );
        }
    }
}

/// Runs `case` once outside the counted loop (warming the SVID cache), then
/// `iterations` times inside it.
fn run(case: &str, iterations: u64) {
    match case.split_once('/') {
        Some(("check", name)) => {
            let ca = pki::Ca::root("example.org");
            let requests = setup::requests(&ca);
            let (request, allowed) = match name {
                "allowed" => (&requests.allowed, true),
                "denied_no_allow_rule" => (&requests.denied, false),
                "denied_by_rule_regex" => (&requests.admin, false),
                _ => panic!("no case {case}"),
            };
            let authorizer = setup::authorizer(&ca, 10_000, Duration::ZERO);
            counted_checks(&authorizer, request, allowed, 1);
            counted_checks(&authorizer, request, allowed, iterations);
        }
        Some(("kubernetes", name)) => {
            let (_, when) = setup::KUBERNETES
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no case {case}"));
            let yaml = format!("rules:\n  - name: r\n    effect: allow\n    when: {when:?}\n");
            // A build that cannot load the condition has nothing to count.
            let Ok(policy) = Policy::parse(&yaml, Path::new("bench.yaml")) else {
                eprintln!("{case}: this build does not load it");
                return;
            };
            let request = setup::kubernetes_request();
            let attrs = celador::edge::request::attributes(&request).unwrap();
            let caller = setup::Caller::new("spiffe://example.org/ns/a/sa/b");
            let input = caller.input(&attrs);
            counted_evaluations(&policy, input, 1);
            counted_evaluations(&policy, input, iterations);
        }
        _ => panic!("no case {case}"),
    }
}

// The script counts inside these two functions only (callgrind's
// `--toggle-collect`): not inlined, so that their names stay in the binary.

#[inline(never)]
fn counted_checks(authorizer: &ExtAuthz, request: &CheckRequest, allowed: bool, n: u64) {
    for _ in 0..n {
        let response = authorizer.check(black_box(request)).unwrap();
        assert_eq!(check::allowed(&response), allowed);
    }
}

#[inline(never)]
fn counted_evaluations(policy: &Policy, input: Input<'_>, n: u64) {
    for _ in 0..n {
        assert!(policy.evaluate(black_box(input)).allowed);
    }
}
