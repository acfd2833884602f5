//! The shipped example (`examples/celador.yaml`, its policy, bundle and
//! SVIDs) loads and decides as the README says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;

use celador::app::config::Config;
use support::check::{allowed, denial, request};
use support::pki::url_encode;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_configuration_loads_and_decides_as_documented() {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/celador.yaml");
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9191");
    let authorizer = celador::app::ext_authz(&config).unwrap_or_else(|e| panic!("{e:?}"));

    let payments = url_encode(&example("pki/payments-api.pem"));
    let exporter = url_encode(&example("pki/batch-exporter.pem"));

    let cases = [
        (&payments, "POST", "/payments/charge", None),
        (&exporter, "GET", "/export/daily.csv", None),
        (
            &exporter,
            "POST",
            "/export/daily.csv",
            Some((403, "no_allow_rule")),
        ),
        (
            &payments,
            "GET",
            "/admin/users",
            Some((403, "denied_by_rule")),
        ),
    ];
    for (cert, method, path, expected) in cases {
        let response = authorizer.check(&request(cert, method, path, &[])).unwrap();
        match expected {
            None => assert!(
                allowed(&response),
                "{method} {path}: {:?}",
                denial(&response)
            ),
            Some((status, reason)) => {
                assert_eq!(
                    denial(&response),
                    Some((status, reason.to_owned())),
                    "{method} {path}"
                )
            }
        }
    }
}

#[test]
fn ci_runs_the_test_command_the_readme_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = "cargo test --all-targets";
    assert!(
        readme.contains(&format!("```sh\n{command}\n```")),
        "README.md"
    );
    assert!(ci.lines().any(|l| l == command), ".ci/run");
    assert!(
        readme.contains("```sh\ncargo run --release -- serve --config examples/celador.yaml\n```")
    );
}

#[test]
fn the_example_envoy_config_holds_what_envoy_config_prints_and_envoy_accepts_it() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (code, printed, stderr) = support::celador::run(&[
        "envoy-config",
        "--config",
        examples.join("celador.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let envoy_yaml = example("envoy.yaml");
    let block: Vec<&str> = envoy_yaml
        .lines()
        .skip_while(|l| !l.contains("# BEGIN celador envoy-config"))
        .skip(1)
        .take_while(|l| !l.contains("# END celador envoy-config"))
        .map(|l| l.strip_prefix("          ").unwrap_or(l))
        .collect();
    assert_eq!(
        block.join("\n"),
        printed.trim_end(),
        "examples/envoy.yaml's filter differs from `celador envoy-config --config examples/celador.yaml`: paste the new output between its BEGIN and END lines"
    );
    let output = std::process::Command::new(support::envoy::binary())
        .args(["--mode", "validate", "-c", "envoy.yaml"])
        .current_dir(&examples)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "envoy refuses examples/envoy.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
