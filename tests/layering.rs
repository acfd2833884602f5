//! What the compiler cannot check of the code's shape: the layering of the
//! celador crate's modules (each imports only from the layers below it),
//! no module circle in either crate, the engine crate's dependencies (no
//! protocol, no runtime), and the length of functions. The engine's purity
//! is the crate boundary's to keep: `crates/celador-engine` cannot import
//! the celador crate, and what it may use is its Cargo.toml. The rule is
//! stated in `src/lib.rs` and in the README's "How the code is laid out".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the celador crate and the top-level modules
/// it may import from; every one may import the engine crate (`engine`,
/// re-exported in `src/lib.rs`). Test code (`tests.rs` files and
/// `mod tests` blocks) is exempt: a test may reach across layers to build
/// its fixtures.
const ALLOWED: &[(&str, &[&str])] = &[
    ("metrics", &[]),
    // The store is the live state alone: its publishers count into their
    // own metrics handles.
    ("store", &[]),
    ("sources", &["store", "metrics"]),
    ("edge", &["store", "metrics"]),
    ("authoring", &["edge"]),
    ("app", &["store", "metrics", "sources", "edge", "authoring"]),
    ("inject", &["app"]),
    // The receiver writes into the governance store (sources::fleet).
    ("ssf", &["app", "sources"]),
    (
        "cli",
        &[
            "inject",
            "ssf",
            "store",
            "metrics",
            "sources",
            "edge",
            "authoring",
            "app",
        ],
    ),
];

/// What the engine crate must not depend on, directly or through another
/// crate: the protocol, the async runtime and the process's telemetry set-up
/// belong to the celador crate.
const NOT_IN_THE_ENGINE: &[&str] = &[
    "tonic",
    "prost",
    "envoy-types",
    "tokio",
    "hyper",
    "tracing-subscriber",
    "notify",
    "prometheus-client",
];

/// A source file and the module path it defines.
struct Module {
    file: PathBuf,
    /// Its path from the celador crate's root: the engine crate's modules
    /// are under `engine`, as the celador crate names them.
    path: Vec<String>,
    /// The path that `crate::` stands for in it.
    krate: Vec<String>,
    /// The non-test code.
    code: String,
}

/// The modules of the celador crate.
fn modules() -> Vec<Module> {
    modules_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None)
}

/// The modules of the engine crate, named `engine::...`.
fn engine_modules() -> Vec<Module> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/celador-engine/src");
    modules_under(&root, Some("engine"))
}

/// The modules of the crate whose source root is `root`; `name` is the
/// crate's module name in the celador crate (its `lib.rs` is that module),
/// `None` for the celador crate itself (whose `lib.rs` and `main.rs` only
/// declare modules).
fn modules_under(root: &Path, name: Option<&str>) -> Vec<Module> {
    let krate: Vec<String> = name.into_iter().map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path();
            if file.is_dir() {
                stack.push(file);
                continue;
            }
            let relative = file.strip_prefix(root).unwrap().with_extension("");
            let mut path = krate.clone();
            path.extend(
                relative
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .filter(|c| !(name.is_some() && c == "lib")),
            );
            let last = relative.file_name().unwrap().to_string_lossy();
            if file.extension().is_none_or(|e| e != "rs")
                || (name.is_none() && matches!(&*last, "lib" | "main"))
                || matches!(&*last, "testing" | "tests")
                || path.iter().any(|p| p == "generated")
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            out.push(Module {
                file,
                path,
                krate: krate.clone(),
                code: without_tests(&text),
            });
        }
    }
    out
}

/// `text` up to its `#[cfg(test)]` test module, without comments.
fn without_tests(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line.split(" // ").next().unwrap_or_default());
        code.push('\n');
    }
    code
}

/// The module paths `module` imports from its crate: `crate::a::b` and
/// `super::…`, resolved, each cut to its first two segments.
fn imports(module: &Module) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let code = &module.code;
    for (start, _) in code.match_indices("crate::") {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[start + "crate::".len()..];
        match rest.strip_prefix('{') {
            // `crate::{a, b::c}`: each item of the group.
            Some(group) => {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    out.insert(segments(item.trim(), module.krate.clone()));
                }
            }
            None => {
                out.insert(segments(rest, module.krate.clone()));
            }
        }
    }
    for (start, _) in code.match_indices("super::") {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut base = module.path.clone();
        base.pop();
        let mut rest = &code[start + "super::".len()..];
        while let Some(more) = rest.strip_prefix("super::") {
            base.pop();
            rest = more;
        }
        out.insert(segments(rest, base));
    }
    out.into_iter()
        .map(|mut p| {
            p.truncate(2);
            p
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// `base` followed by the lowercase path segments at the start of `rest`.
fn segments(rest: &str, mut base: Vec<String>) -> Vec<String> {
    for segment in rest.split("::") {
        let name: String = segment
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // A type, a brace group or a glob ends the module path.
        if name.is_empty() {
            break;
        }
        let whole = name.len() == segment.len();
        base.push(name);
        if !whole {
            break;
        }
    }
    base
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    let modules = modules();
    assert!(modules.len() > 30, "found only {} modules", modules.len());
    for module in &modules {
        let top = module.path[0].as_str();
        let Some(may) = allowed.get(top) else {
            violations.push(format!(
                "{}: the top-level module '{top}' has no place in the layering; add it to ALLOWED and to the README",
                module.file.display()
            ));
            continue;
        };
        for import in imports(module) {
            let target = import[0].as_str();
            if target != top && target != "engine" && !may.contains(&target) {
                violations.push(format!(
                    "{}: '{top}' imports crate::{}, against the layering",
                    module.file.display(),
                    import.join("::")
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Cargo's reading of the workspace: `cargo metadata`, parsed.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The normal (not dev, not build) dependencies of the package `id`, with
/// every package they reach, by name: each with the chain that reaches it.
fn normal_closure(metadata: &serde_json::Value, id: &str) -> BTreeMap<String, Vec<String>> {
    let name_of: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(id.to_owned(), vec![name_of[id].to_owned()])];
    while let Some((id, chain)) = stack.pop() {
        for dep in nodes[id.as_str()]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            let name = name_of[pkg].to_owned();
            if normal && !reached.contains_key(&name) {
                let mut chain = chain.clone();
                chain.push(name.clone());
                reached.insert(name, chain.clone());
                stack.push((pkg.to_owned(), chain));
            }
        }
    }
    reached
}

#[test]
fn the_engine_crate_depends_on_no_protocol_and_no_runtime() {
    let metadata = metadata();
    let engine = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "celador-engine")
        .expect("the workspace has the celador-engine package");
    // What its Cargo.toml declares, as cargo reads it (workspace
    // inheritance and renames resolved).
    let declared: Vec<&str> = engine["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(declared.contains(&"cel"), "{declared:?}");
    let mut violations: Vec<String> = declared
        .iter()
        .filter(|d| NOT_IN_THE_ENGINE.contains(d))
        .map(|d| format!("crates/celador-engine/Cargo.toml depends on {d}"))
        .collect();
    // And what those reach in turn.
    let closure = normal_closure(&metadata, engine["id"].as_str().unwrap());
    assert!(closure.contains_key("regex-syntax"), "{closure:?}");
    for (name, chain) in &closure {
        if NOT_IN_THE_ENGINE.contains(&name.as_str()) {
            violations.push(format!("the engine reaches {name}: {}", chain.join(" -> ")));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    // The graph over modules two levels deep (engine::identity,
    // edge::audit, store, ...), which is where circles hurt a reader; the
    // compiler allows circles inside a crate.
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let modules = modules().into_iter().chain(engine_modules());
    for module in modules {
        let mut from = module.path.clone();
        from.truncate(2);
        for to in imports(&module) {
            if to != from && !from.starts_with(&to) && !to.starts_with(&from) {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        on_path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = on_path.iter().position(|n| n == node) {
            let mut circle = on_path[at..].to_vec();
            circle.push(node.clone());
            return Some(circle);
        }
        if !done.insert(node.clone()) {
            return None;
        }
        on_path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, on_path, done) {
                return Some(circle);
            }
        }
        on_path.pop();
        None
    }
    assert!(
        graph.keys().any(|k| k[0] == "engine") && graph.keys().any(|k| k[0] == "edge"),
        "the graph covers both crates: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            let names: Vec<String> = circle.iter().map(|p| p.join("::")).collect();
            panic!("a module circle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_imports_written_every_way() {
    let module = Module {
        file: PathBuf::from("src/edge/audit/trail.rs"),
        path: vec!["edge".into(), "audit".into(), "trail".into()],
        krate: Vec::new(),
        code: without_tests(
            "use super::record::Record;\nuse crate::store::Store;\nuse crate::{engine, app::config};\nfn f() { crate::sources::files::reload(); super::super::response::X; }\n// use crate::cli;\n#[cfg(test)]\nmod tests {\n    use crate::authoring;\n}\n",
        ),
    };
    let found: Vec<String> = imports(&module).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "app::config",
            "edge::audit",
            "edge::response",
            "engine",
            "sources::files",
            "store"
        ]
    );
    // In the engine crate, `crate::` is the engine.
    let module = Module {
        file: PathBuf::from("crates/celador-engine/src/policy/lint.rs"),
        path: vec!["engine".into(), "policy".into(), "lint".into()],
        krate: vec!["engine".into()],
        code: without_tests("use super::check::MapRead;\nuse crate::identity::Identity;\n"),
    };
    let found: Vec<String> = imports(&module).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["engine::identity", "engine::policy"]);
}

/// Functions of `code` longer than `limit` lines, as `(lines, name)`: from
/// the `fn` line to its closing brace, counted by brace depth with string
/// and character literals and comments blanked out.
fn long_functions(code: &str, limit: usize) -> Vec<(usize, String)> {
    let lines: Vec<String> = code.lines().map(blank_literals).collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body) in lines[start..].iter().enumerate() {
            depth += body.matches('{').count() as i64 - body.matches('}').count() as i64;
            opened |= body.contains('{');
            if !opened && body.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            if opened && depth <= 0 {
                if offset + 1 > limit {
                    out.push((offset + 1, name.clone()));
                }
                break;
            }
        }
    }
    out
}

/// The name of the function a line starts, if it does.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The line with string and char literals emptied and a trailing comment
/// cut, so that braces inside them do not count.
fn blank_literals(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push('"');
            }
            '\'' => {
                // A char literal ('{', '\n') or a lifetime ('a).
                let literal: String = chars.clone().take(3).collect();
                if literal.starts_with('\\') {
                    chars.nth(2);
                    out.push_str("' '");
                } else if literal.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines_and_at_most_three_longer_than_60() {
    let mut over_60 = Vec::new();
    let modules: Vec<Module> = modules().into_iter().chain(engine_modules()).collect();
    assert!(
        modules.iter().any(|m| m.path == ["engine"]),
        "the engine crate's lib.rs is measured too"
    );
    for module in modules {
        for (lines, name) in long_functions(&module.code, 60) {
            over_60.push(format!("{}: {name}: {lines} lines", module.file.display()));
            assert!(
                lines <= 80,
                "{}: {name} is {lines} lines; split it (the limit is 80)",
                module.file.display()
            );
        }
    }
    assert!(
        over_60.len() <= 3,
        "more than three functions are longer than 60 lines:\n{}",
        over_60.join("\n")
    );
}

#[test]
fn function_lengths_are_measured_by_their_braces() {
    let code = "fn short() {\n    let s = \"}}}\";\n    let c = '{';\n}\n\nfn long<'a>(x: &'a str) {\n    // {\n    if true {\n        x;\n    }\n}\nfn declared();\n";
    assert_eq!(long_functions(code, 4), [(6, "long".to_owned())]);
    assert_eq!(long_functions(code, 0).len(), 2);
}
