#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::policy::functions::environment;

fn run(source: &str) -> Checked {
    let (expr, info) = environment()
        .parser()
        .parse_with_source_info(source)
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    check(&expr, &info)
}

fn ty(source: &str) -> Ty {
    let checked = run(source);
    assert!(checked.errors.is_empty(), "{source}: {:?}", checked.errors);
    checked.ty.unwrap()
}

/// The one error of `source`, as (message, the text at its offset).
fn error(source: &str) -> (String, String) {
    let checked = run(source);
    assert_eq!(checked.errors.len(), 1, "{source}: {:?}", checked.errors);
    let problem = &checked.errors[0];
    let at = source[problem.offset as usize..].chars().take(8).collect();
    (problem.message.clone(), at)
}

#[test]
fn variables_fields_and_functions_of_the_schema_type_check() {
    assert_eq!(ty("source.id == 'spiffe://example.org/a'"), Ty::Bool);
    assert_eq!(ty("request.headers"), Ty::string_map());
    assert_eq!(ty("request.headers['x-a']"), Ty::String);
    assert_eq!(ty("request.query.page"), Ty::String);
    assert_eq!(ty("request.size + 1"), Ty::Int);
    assert_eq!(ty("now - request.time"), Ty::Duration);
    assert_eq!(ty("source.not_after - duration('1h') > now"), Ty::Bool);
    assert_eq!(ty("request.path.startsWith('/export/')"), Ty::Bool);
    assert_eq!(ty("request.path.split('/')"), Ty::string_list());
    assert_eq!(ty("request.path.split('/')[1]"), Ty::String);
    assert_eq!(ty("size(workload.labels)"), Ty::Int);
    assert_eq!(ty("source.address.inCidr(['10.0.0.0/8'])"), Ty::Bool);
    assert_eq!(ty("matches(request.path, '^/a$')"), Ty::Bool);
    assert_eq!(ty("'x-a' in request.headers"), Ty::Bool);
    assert_eq!(ty("request.method in ['GET', 'HEAD']"), Ty::Bool);
    assert_eq!(ty("has(request.headers.authorization)"), Ty::Bool);
    assert_eq!(ty("has(source.id)"), Ty::Bool);
    assert_eq!(ty("type(request.size) == int"), Ty::Bool);
    assert_eq!(ty("strings.quote(request.path)"), Ty::String);
    assert_eq!(ty("dyn(request.size) == 'a'"), Ty::Bool);
    assert_eq!(ty("request.size == 1.0"), Ty::Bool);
    assert_eq!(ty("now.getHours('Europe/Paris') < 18"), Ty::Bool);
}

#[test]
fn macros_bind_their_variables_with_the_element_type() {
    assert_eq!(
        ty("request.headers.exists(h, h.startsWith('x-'))"),
        Ty::Bool
    );
    assert_eq!(ty("['a', 'b'].all(x, x.size() == 1)"), Ty::Bool);
    assert_eq!(ty("workload.labels.exists_one(k, k == 'app')"), Ty::Bool);
    assert_eq!(
        ty("request.path.split('/').filter(s, s != '').size() > 2"),
        Ty::Bool
    );
    assert_eq!(ty("[1, 2].map(x, x * 2)"), Ty::List(Box::new(Ty::Dyn)));
    // A bound variable's type is checked inside the macro.
    let (message, _) = error("['a'].exists(x, x + 1 == 2)");
    assert_eq!(message, "'+' cannot be applied to string and int");
}

#[test]
fn unknown_names_are_errors_with_the_nearest_name_suggested() {
    assert_eq!(
        error("sourc.id == 'a'"),
        (
            "undeclared variable 'sourc'; did you mean 'source'?".into(),
            "sourc.id".into()
        )
    );
    assert_eq!(
        error("source.idd == 'a'"),
        (
            "'source' has no field 'idd'; did you mean 'id'?".into(),
            "idd == '".into()
        )
    );
    assert_eq!(
        error("request.methd == 'GET'").0,
        "'request' has no field 'methd'; did you mean 'method'?"
    );
    assert_eq!(
        error("request.path.startswith('/a')").0,
        "undeclared method 'startswith'; did you mean 'startsWith'?"
    );
    assert_eq!(
        error("lenght(request.path) > 1").0,
        "undeclared function 'lenght'"
    );
    assert_eq!(
        error("totally_unknown").0,
        "undeclared variable 'totally_unknown'"
    );
}

#[test]
fn obvious_type_errors_are_found_before_any_request() {
    let cases = [
        (
            "request.size + 'a'",
            "'+' cannot be applied to int and string",
        ),
        (
            "source.id == 3",
            "'==' compares string with int, which is always false",
        ),
        (
            "source.id != 3",
            "'!=' compares string with int, which is always true",
        ),
        ("request.method < 1", "'<' cannot order string and int"),
        (
            "request.size && true",
            "'&&' takes bool operands, but this is int",
        ),
        ("!request.path", "'!' takes a bool, but this is string"),
        (
            "request.headers[1] == 'a'",
            "this map's keys are string; it cannot be indexed by int",
        ),
        (
            "request.path[0] == 'a'",
            "a value of type string cannot be indexed with '[...]'",
        ),
        (
            "request.path.id == 'a'",
            "a value of type string has no fields; '.id' cannot be selected",
        ),
        (
            "1 in request.headers",
            "'in' looks for int among map keys of type string, which is always false",
        ),
        (
            "request.size.startsWith('1')",
            "'startsWith' cannot be called as int.startsWith(string); it takes string.startsWith(string) -> bool",
        ),
        (
            "request.path.startsWith(1)",
            "'startsWith' cannot be called as string.startsWith(int); it takes string.startsWith(string) -> bool",
        ),
        (
            "size(1)",
            "'size' cannot be called as size(int); it takes size(string) -> int or size(bytes) -> int or size(list) -> int or size(map) -> int",
        ),
        (
            "startsWith(request.path, '/')",
            "'startsWith' is a method, called as x.startsWith(...)",
        ),
        (
            "request.path.isIP()",
            "'isIP' is a function, called as isIP(...), not as a method",
        ),
        (
            "request.size.all(x, true)",
            "cannot iterate over a value of type int; only lists and maps",
        ),
        (
            "{[1]: 2}.size() == 1",
            "a map key must be a string, int, uint or bool, not list(int)",
        ),
    ];
    for (source, message) in cases {
        let checked = run(source);
        let messages: Vec<&str> = checked.errors.iter().map(|p| p.message.as_str()).collect();
        assert!(messages.contains(&message), "{source}: {messages:?}");
    }
}

#[test]
fn the_reads_of_an_expression_are_collected() {
    let checked = run("source.id == 'a' && request.headers['x'] == 'b' && [1].exists(x, x == 1)");
    let reads: Vec<&str> = checked.reads.iter().map(String::as_str).collect();
    assert_eq!(reads, ["request", "request.headers", "source", "source.id"]);
}

#[test]
fn literal_regexes_are_collected_for_compilation_at_load() {
    let checked = run("request.path.matches('^/a/[0-9]+$') || matches(request.host, 'x')");
    let patterns: Vec<&str> = checked
        .regex_literals
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(patterns, ["^/a/[0-9]+$", "x"]);
}

#[test]
fn every_documented_function_example_type_checks_and_is_true() {
    use crate::policy::functions::{RegexTable, root_context};
    use crate::policy::kubernetes::{Literals, prepare};
    use crate::policy::schema::FUNCTIONS;
    use std::sync::Arc;
    let env = Arc::new(environment());
    for function in FUNCTIONS {
        assert_eq!(ty(function.example), Ty::Bool, "{}", function.name);
        // As a rule loads: literals parsed, regexes compiled, in the
        // policy's root context.
        let (mut expr, info) = env
            .parser()
            .parse_with_source_info(function.example)
            .unwrap();
        let checked = check(&expr, &info);
        let mut regexes = RegexTable::default();
        for (pattern, _) in &checked.regex_literals {
            regexes.add(pattern).unwrap();
        }
        let mut literals = Literals::default();
        assert_eq!(prepare(&mut expr, &info, &mut literals), []);
        let mut root = root_context(Arc::clone(&env), Arc::new(regexes));
        literals.install(&mut root);
        let result = cel::Value::resolve(&expr, &root);
        assert_eq!(
            result,
            Ok(cel::Value::Bool(true)),
            "{}: {}",
            function.name,
            function.example
        );
    }
}

#[test]
fn suggestions_prefer_case_insensitive_matches_and_stay_quiet_when_far() {
    assert_eq!(
        suggest("STARTSWITH", ["startsWith", "size"]),
        "; did you mean 'startsWith'?"
    );
    assert_eq!(
        suggest("reqest", ["request", "source"]),
        "; did you mean 'request'?"
    );
    assert_eq!(suggest("xyz", ["request", "source"]), "");
}
