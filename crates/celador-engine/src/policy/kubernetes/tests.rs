//! Conformance of celador's Kubernetes libraries: one case per function,
//! with the result Kubernetes documents (the examples of
//! `k8s.io/apiserver/pkg/cel/library` and cel-go's `ext` lists docs),
//! including the error cases. Each expression goes through the same load
//! path as a rule: type check, literal parsing, regex compilation, the
//! policy's root context.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::policy::check::check;
use crate::policy::functions::{RegexTable, environment, root_context};
use crate::policy::{Policy, PolicyError};

/// Evaluates `source` as a rule's condition would be, or the load or
/// evaluation error.
fn eval(source: &str) -> Result<cel::Value, String> {
    let env = Arc::new(environment());
    let (mut expr, info) = crate::policy::functions::parser(&env)
        .parse_with_source_info(source)
        .map_err(|e| e.to_string())?;
    let checked = check(&expr, &info);
    if let Some(problem) = checked.errors.first() {
        return Err(format!("check: {}", problem.message));
    }
    let mut regexes = RegexTable::default();
    for (pattern, _) in &checked.regex_literals {
        regexes.add(pattern).map_err(|e| format!("load: {e}"))?;
    }
    let mut literals = Literals::default();
    if let Some(problem) = prepare(&mut expr, &info, &mut literals).first() {
        return Err(format!("load: {}", problem.message));
    }
    let mut root = root_context(env, Arc::new(regexes));
    literals.install(&mut root);
    cel::Value::resolve(&expr, &root).map_err(|e| format!("eval: {e}"))
}

/// Asserts that each of `cases` evaluates to `true`.
fn all_true(cases: &[&str]) {
    for case in cases {
        assert_eq!(eval(case), Ok(cel::Value::Bool(true)), "{case}");
    }
}

/// Asserts that each of `cases` fails, with a message containing the text
/// given beside it.
fn all_fail(cases: &[(&str, &str)]) {
    for (case, wanted) in cases {
        let error = eval(case).expect_err(case);
        assert!(error.contains(wanted), "{case}: {error}");
    }
}

#[test]
fn ip_addresses_as_kubernetes_documents_them() {
    all_true(&[
        "isIP('127.0.0.1') && isIP('::1')",
        "!isIP('127.0.0.256') && !isIP(':::1')",
        "!isIP('::ffff:1.2.3.4') && !isIP('fe80::1%eth0') && !isIP('10.01.2.3')",
        "ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::abcd')",
        "!ip.isCanonical('2001:DB8::ABCD') && !ip.isCanonical('2001:db8::0:0:0:abcd')",
        "ip('127.0.0.1').family() == 4 && ip('::1').family() == 6",
        "ip('0.0.0.0').isUnspecified() && !ip('127.0.0.1').isUnspecified()",
        "ip('::').isUnspecified() && !ip('::1').isUnspecified()",
        "ip('127.0.0.1').isLoopback() && !ip('192.168.0.1').isLoopback()",
        "ip('::1').isLoopback() && !ip('2001:db8::abcd').isLoopback()",
        "ip('224.0.0.1').isLinkLocalMulticast() && !ip('224.0.1.1').isLinkLocalMulticast()",
        "ip('ff02::1').isLinkLocalMulticast() && !ip('fd00::1').isLinkLocalMulticast()",
        "ip('169.254.169.254').isLinkLocalUnicast() && !ip('192.168.0.1').isLinkLocalUnicast()",
        "ip('fe80::1').isLinkLocalUnicast() && !ip('fd80::1').isLinkLocalUnicast()",
        "ip('192.168.0.1').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()",
        "ip('2001:db8::abcd').isGlobalUnicast() && !ip('ff00::1').isGlobalUnicast()",
        "string(ip('2001:db8:0:0:0::1')) == '2001:db8::1'",
        "ip('10.0.0.1') == ip('10.0.0.1') && ip('10.0.0.1') != ip('10.0.0.2')",
        "type(ip('10.0.0.1')) != string",
    ]);
}

#[test]
fn cidr_ranges_as_kubernetes_documents_them() {
    all_true(&[
        "isCIDR('192.168.0.0/16') && isCIDR('::1/128')",
        "!isCIDR('192.168.0.0/33') && !isCIDR('::1/129') && !isCIDR('::ffff:1.2.3.4/120')",
        "!isCIDR('10.0.0.0/08') && !isCIDR('10.0.0.0/+8') && !isCIDR('10.0.0.0')",
        "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))",
        "!cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))",
        "cidr('192.168.0.0/24').containsIP('192.168.0.1')",
        "!cidr('192.168.0.0/24').containsIP('192.168.1.1')",
        "cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))",
        "!cidr('192.168.1.0/24').containsCIDR(cidr('192.168.2.0/24'))",
        "cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')",
        "!cidr('192.168.1.0/24').containsCIDR('192.168.2.0/24')",
        "!cidr('192.168.0.0/24').containsCIDR('192.168.0.0/16')",
        "cidr('192.168.0.1/24').ip() == ip('192.168.0.1')",
        "cidr('192.168.0.1/24').ip().family() == 4 && cidr('::1/128').ip().family() == 6",
        "cidr('192.168.0.0/24').masked() == cidr('192.168.0.0/24')",
        "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
        "cidr('192.168.0.1/24') != cidr('192.168.0.1/24').masked()",
        "cidr('192.168.0.0/16').prefixLength() == 16 && cidr('::1/128').prefixLength() == 128",
        "string(cidr('fd00::1/8').masked()) == 'fd00::/8'",
        "cidr('0.0.0.0/0').containsIP('8.8.8.8') && !cidr('0.0.0.0/0').containsIP('::1')",
        "!cidr('fd00::/8').containsIP('10.0.0.1')",
    ]);
}

#[test]
fn bad_addresses_and_ranges_are_errors_at_load_or_evaluation() {
    all_fail(&[
        // Literals fail the load, as a bad literal regex does.
        (
            "ip('127.0.0.256') == ip('::1')",
            "load: \"127.0.0.256\" is not an IP address",
        ),
        ("ip('::ffff:1.2.3.4').family() == 6", "IPv4-mapped"),
        (
            "cidr('192.168.0.0/33').prefixLength() == 1",
            "load: \"192.168.0.0/33\" is not a CIDR range",
        ),
        (
            "cidr('::ffff:1.2.3.0/120').prefixLength() == 1",
            "IPv4-mapped",
        ),
        (
            "url('../relative-path').getHost() == ''",
            "load: URL parse error",
        ),
        // Values computed at evaluation fail there.
        ("ip('10.0.0.' + '256').family() == 4", "eval:"),
        ("ip('::ffff:' + '1.2.3.4').family() == 6", "IPv4-mapped"),
        ("cidr('10.0.0.0/' + '33').prefixLength() == 33", "eval:"),
        (
            "cidr('10.0.0.0/8').containsIP('::ffff:10.0.0.1')",
            "IPv4-mapped",
        ),
        (
            "cidr('10.0.0.0/8').containsIP('nope')",
            "load: \"nope\" is not an IP address",
        ),
        ("cidr('10.0.0.0/8').containsCIDR('10.0.0.0/40')", "load:"),
        ("ip.isCanonical('nope')", "eval:"),
    ]);
}

#[test]
fn in_cidr_treats_mapped_addresses_as_cidr_contains_ip_does() {
    // The shorthand and the Kubernetes form agree, errors included.
    all_true(&[
        "'10.1.2.3'.inCidr('10.0.0.0/8') == cidr('10.0.0.0/8').containsIP('10.1.2.3')",
        "'10.1.2.3'.inCidr(['192.168.0.0/16', '10.0.0.0/8'])",
        "inCidr('fd12::1', 'fd00::/8') && !inCidr('10.0.0.1', 'fd00::/8')",
    ]);
    all_fail(&[
        ("'::ffff:10.1.2.3'.inCidr('10.0.0.0/8')", "IPv4-mapped"),
        (
            "cidr('10.0.0.0/8').containsIP('::ffff:10.1.2.3')",
            "IPv4-mapped",
        ),
        ("'10.1.2.3'.inCidr('::ffff:10.0.0.0/104')", "IPv4-mapped"),
        ("'10.1.2.3'.inCidr('10.0.0.0/08')", "is not a CIDR range"),
        ("'10.1.2.3'.inCidr('10.0.0.0')", "is not a CIDR range"),
    ]);
}

#[test]
fn urls_as_kubernetes_documents_them() {
    all_true(&[
        "isURL('https://user:pass@example.com:80/path?query=val#fragment')",
        "isURL('/absolute-path') && !isURL('https://a:b:c/') && !isURL('../relative-path')",
        "!isURL('') && !isURL(':x') && !isURL('https://ex ample.com/')",
        "!isURL('https://%41.com/') && url('https://caf%C3%A9.fr/').getHost() == 'café.fr'",
        "url('/path').getScheme() == '' && url('https://example.com/').getScheme() == 'https'",
        "url('https://example.com:80/').getHost() == 'example.com:80'",
        "url('https://example.com/').getHost() == 'example.com'",
        "url('https://[::1]:80/').getHost() == '[::1]:80' && url('https://[::1]/').getHost() == '[::1]'",
        "url('/path').getHost() == ''",
        "url('https://example.com:80/').getHostname() == 'example.com'",
        "url('https://127.0.0.1:80/').getHostname() == '127.0.0.1'",
        "url('https://[::1]:80/').getHostname() == '::1' && url('/path').getHostname() == ''",
        "url('https://example.com:80/').getPort() == '80' && url('https://example.com/').getPort() == ''",
        "url('/path').getPort() == ''",
        "url('https://example.com/path').getEscapedPath() == '/path'",
        "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
        "url('https://example.com').getEscapedPath() == ''",
        "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
        "url('https://example.com/path?key with spaces=value with spaces').getQuery() == {'key with spaces': ['value with spaces']}",
        "url('https://example.com/path?').getQuery() == {} && url('https://example.com/path').getQuery() == {}",
        "url('https://example.com/p?a=1;b=2&c=%zz&d=%41+b').getQuery() == {'d': ['A b']}",
        "url('https://user:pass@example.com/a#frag').getHost() == 'example.com'",
        "url('mailto:someone@example.com').getScheme() == 'mailto'",
        "url('/a' + '/b').getEscapedPath() == '/a/b'",
        "url('/a') == url('/a') && url('/a') != url('/b')",
    ]);
    all_fail(&[("url('/a' + '%zz').getHost() == ''", "eval: ")]);
}

#[test]
fn find_and_find_all_share_the_bounded_regex_engine_of_matches() {
    all_true(&[
        "'abc 123'.find('[0-9]+') == '123' && 'abc'.find('[0-9]+') == ''",
        "'123 abc 456'.findAll('[0-9]+') == ['123', '456']",
        "'123 abc 456'.findAll('[0-9]+', 1) == ['123']",
        "'123 abc 456'.findAll('[0-9]+', 0) == [] && '123 abc 456'.findAll('[0-9]+', -1).size() == 2",
        // A pattern computed at evaluation, from the shared cache.
        "'a1b22'.findAll('[0-9]' + '+') == ['1', '22']",
    ]);
    all_fail(&[
        (
            "'x'.find('(unclosed') == ''",
            "load: invalid regular expression",
        ),
        (
            "'x'.findAll('(' + 'unclosed').size() == 0",
            "invalid regular expression",
        ),
        // Beyond the size limit of a pattern computed at evaluation.
        (
            "'a'.find('\\\\w{1000}' + '') == ''",
            "invalid regular expression",
        ),
        // Beyond the size limit of a literal.
        (
            "'a'.find('\\\\w{10000}') == ''",
            "load: invalid regular expression",
        ),
    ]);
}

#[test]
fn lists_as_kubernetes_documents_them() {
    all_true(&[
        "[1, 2, 3].isSorted() && ['a', 'b', 'b', 'c'].isSorted()",
        "![2.0, 1.0].isSorted() && [1].isSorted() && [].isSorted()",
        "[1, 3].sum() == 4 && [1.0, 3.0].sum() == 4.0 && [].sum() == 0",
        "[duration('1m'), duration('1s')].sum() == duration('1m1s')",
        "[1u, 2u].sum() == 3u",
        "[1, 3].min() == 1 && [1, 3].max() == 3 && [1].min() == 1",
        "([0] + []).min() == 0",
        "[1, 2, 2, 3].indexOf(2) == 1 && ['a', 'b', 'b', 'c'].lastIndexOf('b') == 2",
        "[1.0].indexOf(1.1) == -1 && [].indexOf('string') == -1",
    ]);
    all_fail(&[
        ("[].min() == 0", "min called on empty list"),
        ("[].max() == 0", "max called on empty list"),
        ("[9223372036854775807, 1].sum() == 0", "verflow"),
        ("[1, 'a'].isSorted()", "eval:"),
        ("['a', 'b'].sum() == 'ab'", "string values cannot be summed"),
        ("[[1], [2]].min() == [1]", "cannot be ordered"),
    ]);
}

#[test]
fn sets_as_kubernetes_documents_them() {
    all_true(&[
        "sets.contains([], []) && sets.contains([1], []) && sets.contains([1, 2, 3, 4], [2, 3])",
        "!sets.contains([2, 3], [1, 2, 3, 4]) && sets.contains([1, 2, 3], [3, 2, 1])",
        "sets.contains([2], [2.0]) && sets.contains([[1], [2, 3]], [[2, 3]])",
        "sets.equivalent([], []) && sets.equivalent([1], [1, 1]) && sets.equivalent([1], [1u, 1.0])",
        "sets.equivalent([1, 2, 3], [3u, 2.0, 1]) && !sets.equivalent([2, 1], [1])",
        "sets.intersects([1], [1]) && sets.intersects([1], [1.0, 2])",
        "!sets.intersects([], []) && !sets.intersects([1], [])",
    ]);
}

#[test]
fn the_cel_lists_extension_is_there() {
    all_true(&[
        "[1, 2, 3, 4].slice(1, 3) == [2, 3]",
        "[1, [2, [3, [4]]]].flatten(2) == [1, 2, 3, [4]]",
        "[1, 2, 2, 1].distinct() == [1, 2] && [3, 1, 2].sort() == [1, 2, 3]",
        "[1, 2, 3].reverse() == [3, 2, 1] && lists.range(3) == [0, 1, 2]",
        "['bb', 'a', 'ccc'].sortBy(s, size(s)) == ['a', 'bb', 'ccc']",
    ]);
    all_fail(&[("[1, 2].slice(2, 1) == []", "slice")]);
}

#[test]
fn the_checker_accepts_what_the_runtime_runs() {
    all_true(&[
        "'%s is %d'.format(['x', 2]) == 'x is 2'",
        "'abc'.reverse() == 'cba'",
        // `%` with an operand known only at evaluation.
        "dyn([1, 2, 3, 4]).filter(n, n % 2 == 0) == [2, 4]",
        "dyn(7) % 4 == 3 && 7 % dyn(4) == 3",
    ]);
}

#[test]
fn what_is_not_supported_is_refused_at_load() {
    for (when, wanted) in [
        (
            "size(quantity('1Gi')) == 1",
            "undeclared function 'quantity'",
        ),
        ("[1].includes(1)", "undeclared method 'includes'"),
    ] {
        let message = load_error(when);
        assert!(message.contains(wanted), "{when}: {message}");
    }
    // The optional library's macros work.
    all_true(&[
        "optional.of(1).optMap(x, x + 1).value() == 2",
        "optional.of(1).optFlatMap(x, optional.of(x + 1)).value() == 2",
    ]);
}

#[test]
fn backtick_field_names_select_keys_that_are_not_identifiers() {
    all_true(&[
        "{'content-type': 'a'}.`content-type` == 'a'",
        "has({'x.y': 1}.`x.y`) && !has({'a': 1}.`b-c`)",
        "{'a b': 1}.?`a b`.orValue(0) == 1",
    ]);
    let env = environment();
    let parsed = crate::policy::functions::parser(&env)
        .parse("request.headers.`x-tenant` == 'a'")
        .unwrap();
    assert_eq!(
        crate::policy::unparse::unparse(&parsed),
        "request.headers.`x-tenant` == \"a\""
    );
}

#[test]
fn duration_milliseconds_are_the_millisecond_component_as_in_the_specification() {
    all_true(&[
        // cel-go and the specification: 123 s 321 ms ... gives 321.
        "duration('123.321456789s').getMilliseconds() == 321",
        "duration('-1.5s').getMilliseconds() == -500",
        "duration('1h').getMilliseconds() == 0",
        "timestamp('2023-05-28T00:00:42.123Z').getMilliseconds() == 123",
        "timestamp('2023-05-28T00:00:42.123Z').getMilliseconds('Europe/Paris') == 123",
    ]);
}

/// The one error message of a rules file with the condition `when`.
fn load_error(when: &str) -> String {
    let yaml = format!("rules:\n  - name: r\n    effect: allow\n    when: {when:?}\n");
    let error: PolicyError = Policy::parse(&yaml, Path::new("rules.yaml")).unwrap_err();
    let messages: Vec<_> = error
        .diagnostics
        .iter()
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(messages.len(), 1, "{when}: {messages:?}");
    messages.into_iter().next().unwrap()
}

#[test]
fn celador_check_types_each_new_function() {
    let cases = [
        ("ip(1).family() == 4", "'ip' cannot be called as ip(int)"),
        ("ip('::1').family() == '6'", "'==' compares int with string"),
        (
            "cidr('10.0.0.0/8').containsIP(1)",
            "'containsIP' cannot be called",
        ),
        (
            "cidr('10.0.0.0/8').prefixLenght() == 8",
            "did you mean 'prefixLength'?",
        ),
        ("isCIDRR('10.0.0.0/8')", "did you mean 'isCIDR'?"),
        ("url('/a').getHost() == 1", "'==' compares string with int"),
        (
            "url('/a').getHostName() == ''",
            "did you mean 'getHostname'?",
        ),
        (
            "'a'.findAll('a', 'b').size() == 0",
            "'findAll' cannot be called",
        ),
        ("'a'.find(1) == ''", "'find' cannot be called"),
        ("[1].isSorted(1)", "'isSorted' cannot be called"),
        ("[1, 2].sum() == 'a'", "'==' compares int with string"),
        ("sets.contains([1], 1)", "'sets.contains' cannot be called"),
        (
            "sets.intersect([1], [1])",
            "did you mean 'sets.intersects'?",
        ),
        ("ip.isCanonical(1)", "'ip.isCanonical' cannot be called"),
        ("'x'.format('y') == 'x'", "'format' cannot be called"),
        ("'a' % 2 == 1", "'%' cannot be applied to string and int"),
        (
            "ip('10.0.0.1') == '10.0.0.1'",
            "'==' compares net.IP with string",
        ),
        (
            "request.?methd.orValue('') == 'GET'",
            "did you mean 'method'?",
        ),
        ("request.headers[?1].hasValue()", "cannot be indexed by int"),
        ("optional.of(1).hasValu()", "did you mean 'hasValue'?"),
    ];
    for (when, wanted) in cases {
        let message = load_error(when);
        assert!(message.contains(wanted), "{when}: {message}");
    }
}

#[test]
fn literals_are_parsed_once_at_load_and_bad_ones_fail_the_load_where_written() {
    let yaml = "rules:\n  - name: r\n    effect: allow\n    when: cidr('10.0.0.0/8').containsIP(ip('10.0.0.x'))\n";
    let error = Policy::parse(yaml, Path::new("rules.yaml")).unwrap_err();
    let [diagnostic] = error.diagnostics.as_slice() else {
        panic!("{error}");
    };
    assert!(diagnostic.message.contains("10.0.0.x"), "{diagnostic}");
    // The column of the literal, not of the rule.
    assert_eq!(diagnostic.column, 44, "{diagnostic}");
    // A good literal is renamed to the table's lookup, shown as written.
    let env = environment();
    let (mut expr, info) = env
        .parser()
        .parse_with_source_info("cidr('10.0.0.0/8').containsIP(ip('10.0.0.1'))")
        .unwrap();
    let mut literals = Literals::default();
    assert_eq!(prepare(&mut expr, &info, &mut literals), []);
    assert_eq!(literals.parsed.values().map(HashMap::len).sum::<usize>(), 2);
    assert_eq!(
        crate::policy::unparse::unparse(&expr),
        "cidr(\"10.0.0.0/8\").containsIP(ip(\"10.0.0.1\"))"
    );
}

#[test]
fn the_fuzz_seed_of_the_new_syntax_loads() {
    // The rules_file fuzz target starts from it: a seed that does not load
    // would only exercise the error paths.
    let seed = include_str!("../../../../../fuzz/seeds/rules_file/kubernetes.yaml");
    let policy =
        Policy::parse(seed, Path::new("kubernetes.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rules().len(), 4);
}

#[test]
fn parse_errors_quote_the_whole_value_never_a_part_so_redaction_finds_it() {
    // Redaction scrubs the values a rule read from a secret header or query
    // parameter where an error quotes them whole (`Redaction::message`).
    let secret = "https://user:hunter2@a:bc/%zz";
    let errors = [
        url::parse_url(secret).unwrap_err(),
        url::parse_url("https://a/p%zzhunter2").unwrap_err(),
        ip::parse_ip("hunter2").unwrap_err(),
        ip::parse_cidr("10.0.0.0/hunter2").unwrap_err(),
        ip::parse_cidr("hunter2/8").unwrap_err(),
    ];
    for error in errors {
        assert_eq!(error.matches("hunter2").count(), 1, "{error}");
        let quoted = error.split('"').nth(1).unwrap_or_default();
        assert!(quoted.contains("hunter2"), "{error}");
    }
}

#[test]
fn two_variable_comprehensions_as_cel_go_documents_them() {
    all_true(&[
        // Over a list: the index, then the element.
        "[1, 2, 3].all(i, v, i < v) && ![1, 2, 3].all(i, v, i > 0)",
        "[10, 20].all(i, v, v == (i + 1) * 10)",
        "[1, 2, 3].exists(i, v, i == 1 && v == 2) && ![1, 2, 3].exists(i, v, i == v)",
        "[1, 2, 3].existsOne(i, v, v > 2) && ![1, 2, 3].existsOne(i, v, v > 1)",
        "![].exists(i, v, true) && [].all(i, v, false) && ![].existsOne(i, v, true)",
        // Over a map: the key, then its value.
        "{'a': 1, 'b': 2}.all(k, v, k.size() == 1 && v > 0)",
        "!{'a': 1, 'b': 2}.all(k, v, v > 1) && {'a': 1, 'b': 2}.exists(k, v, k == 'b' && v == 2)",
        "{'a': 1, 'b': 2}.existsOne(k, v, v == 2) && !{'a': 2, 'b': 2}.existsOne(k, v, v == 2)",
        // cel-go's examples (`ext.TwoVarComprehensions`).
        "[1, 2, 3].transformList(indexVar, valueVar, (indexVar * valueVar) + valueVar) == [1, 4, 9]",
        "[1, 2, 3].transformList(indexVar, valueVar, indexVar % 2 == 0, (indexVar * valueVar) + valueVar) == [1, 9]",
        "{'greeting': 'hello', 'farewell': 'goodbye'}.transformList(k, _, k).sort() == ['farewell', 'greeting']",
        "{'greeting': 'hello', 'farewell': 'goodbye'}.transformList(_, v, v).sort() == ['goodbye', 'hello']",
        "{'greeting': 'hello', 'farewell': 'goodbye'}.transformMap(k, v, v + '!') == {'greeting': 'hello!', 'farewell': 'goodbye!'}",
        "{'a': 1, 'b': 2}.transformMap(k, v, v > 1, v * 10) == {'b': 20}",
        "[1, 2, 3].transformMap(i, v, v * 2) == {0: 2, 1: 4, 2: 6}",
        "[1, 2, 3].transformMap(i, v, i > 0, v) == {1: 2, 2: 3}",
        "{'greeting': 'hello'}.transformMapEntry(keyVar, valueVar, {valueVar: keyVar}) == {'hello': 'greeting'}",
        "[1, 2, 3].transformMapEntry(indexVar, valueVar, {valueVar: indexVar}) == {1: 0, 2: 1, 3: 2}",
        "{'a': 1, 'b': 2}.transformMapEntry(k, v, v > 1, {k + k: v}) == {'bb': 2}",
        "{'a': 1}.transformMapEntry(k, v, {}) == {} && [].transformMap(i, v, v) == {}",
        // The policy reference's examples.
        "[1, 2, 3].transformList(i, v, i > 0, v * 2) == [4, 6]",
        "{\"a\": 1}.transformMapEntry(k, v, {v: k}) == {1: \"a\"}",
        // Nested, shadowed, and the outer variables inside.
        "{'a': [1, 2], 'b': [3]}.all(k, v, v.all(i, x, x > i))",
        "[[1], [2]].exists(i, v, v.exists(i, v, i == 0 && v == 2))",
        "[10, 20].all(i, v, [1].all(j, w, v > w && i >= j))",
        "[1].all(k, v, [k].all(k, w, w == k))",
        "[5].all(i, v, [1, 2].map(x, x + v) == [6, 7])",
        // An operand known only at evaluation.
        "dyn({'x-a': '1'}).exists(k, v, k.startsWith('x-') && v == '1')",
        "dyn([3, 4]).transformList(i, v, i + v) == [3, 5]",
        // Errors absorbed as by `&&` and `||`: a false (true) element decides.
        "![0, 3].all(i, v, 2 / v == 1) && [0, 2].exists(i, v, 2 / v == 1)",
    ]);
    all_fail(&[
        // An error that no element absorbs, as in cel-go.
        ("[0, 2].all(i, v, 2 / v == 1)", "eval: "),
        ("[0, 3].exists(i, v, 2 / v == 1)", "eval: "),
        ("[0, 1].existsOne(i, v, 2 / v == 2)", "eval: "),
        ("[0].transformList(i, v, 2 / v).size() == 1", "eval: "),
        (
            "{'greeting': 'aloha', 'farewell': 'aloha'}.transformMapEntry(k, v, {v: k}).size() == 1",
            "insert failed: key \"aloha\" already exists",
        ),
        ("dyn('abc').all(k, v, true)", "eval: "),
        (
            "dyn([1]).transformMapEntry(i, v, dyn(v)).size() == 1",
            "must give a map",
        ),
    ]);
}

#[test]
fn celador_check_types_two_variable_comprehensions() {
    let cases = [
        (
            "'abc'.all(k, v, true)",
            "cannot iterate over a value of type string",
        ),
        ("[1].all(i, v, i == 'a')", "'==' compares int with string"),
        (
            "{'a': 1}.exists(k, v, v == 'a')",
            "'==' compares int with string",
        ),
        (
            "{'a': 1}.exists(k, v, k == 1)",
            "'==' compares string with int",
        ),
        (
            "[1].all(i, v, v)",
            "'&&' takes bool operands, but this is int",
        ),
        (
            "[1].transformMapEntry(i, v, v).size() == 1",
            "transformMapEntry's expression must give a map",
        ),
        ("[1].all(i, value, vlue > 0)", "did you mean 'value'?"),
        ("[1].all(k, k, true)", "needs two different variables"),
        ("[1].all(k.x, v, true)", "argument must be a simple name"),
        (
            "[1].transformList(i, v).size() == 1",
            "'transformList' takes (k, v, expression) or (k, v, filter, expression), not 2 arguments",
        ),
        (
            "[1].exists_one(i, v, true)",
            "'exists_one' takes (x, predicate)",
        ),
        (
            "[1].transfromList(1, 2, 3).size() == 1",
            "did you mean 'transformList'?",
        ),
        ("[1].exitsOne(1, 2, true)", "did you mean 'existsOne'?"),
    ];
    for (when, wanted) in cases {
        let message = load_error(when);
        assert!(message.contains(wanted), "{when}: {message}");
    }
}

#[test]
fn two_variable_comprehensions_read_back_as_written() {
    let env = environment();
    for source in [
        "[1, 2].all(i, v, i < v)",
        "m.exists(k, v, k == \"a\" && v > 1)",
        "m.existsOne(k, v, v == 2)",
        "l.transformList(i, v, v * 2)",
        "l.transformList(i, v, i > 0, v * 2)",
        "m.transformMap(k, v, v + 1)",
        "m.transformMap(k, v, k != \"a\", v + 1)",
        "m.transformMapEntry(k, v, {v: k})",
        "m.transformMapEntry(k, v, v > 0, {v: k})",
        "m.all(k, v, v.exists(i, x, x == k))",
    ] {
        let parsed = crate::policy::functions::parser(&env)
            .parse(source)
            .unwrap();
        assert_eq!(crate::policy::unparse::unparse(&parsed), source);
    }
}

#[test]
fn literal_ranges_of_in_cidr_are_parsed_once_at_load() {
    let source = "'10.1.2.3'.inCidr(['192.168.0.0/16', '10.0.0.0/8']) && inCidr('fd00::1', 'fd00::/8') \
        && cidr('10.0.0.0/8').containsIP(ip('10.0.0.1')) && url('https://a.example/p').getHost() == 'a.example' \
        && cidr('10.0.0.0/8').containsIP('10.0.0.2') && cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')";
    let env = Arc::new(environment());
    let (mut expr, info) = crate::policy::functions::parser(&env)
        .parse_with_source_info(source)
        .unwrap();
    assert_eq!(check(&expr, &info).errors, []);
    let mut literals = Literals::default();
    assert_eq!(prepare(&mut expr, &info, &mut literals), []);
    // The compiled form: both calls find their ranges parsed, by the text
    // they were written as, which messages show.
    assert_eq!(
        literals
            .ranges
            .get("[\"192.168.0.0/16\", \"10.0.0.0/8\"]")
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(literals.ranges.get("\"fd00::/8\"").map(Vec::len), Some(1));
    let unparsed = crate::policy::unparse::unparse(&expr);
    assert!(
        unparsed.contains(
            "containsIP(\"10.0.0.2\") && cidr(\"10.0.0.0/8\").containsCIDR(\"10.1.0.0/16\")"
        ),
        "{unparsed}"
    );
    assert!(
        unparsed.starts_with(
            "\"10.1.2.3\".inCidr([\"192.168.0.0/16\", \"10.0.0.0/8\"]) && inCidr(\"fd00::1\", \"fd00::/8\")"
        ),
        "{unparsed}"
    );
    let mut root = root_context(env, Arc::new(RegexTable::default()));
    literals.install(&mut root);
    // Per evaluation, only the two addresses `inCidr` reads and the
    // argument of `containsIP` are parsed: no range, no `ip('…')`, no
    // `url('…')`. (A short literal argument is cheaper parsed than found.)
    PARSED.with(|parsed| parsed.set([0; 3]));
    for _ in 0..10 {
        assert_eq!(
            cel::Value::resolve(&expr, &root),
            Ok(cel::Value::Bool(true))
        );
    }
    // (A range is parsed with its address: 4 addresses, 1 range.)
    assert_eq!(PARSED.with(std::cell::Cell::get), [40, 10, 0]);
}

#[test]
fn a_bad_literal_range_of_in_cidr_fails_the_load_where_written() {
    let yaml = "rules:\n  - name: r\n    effect: allow\n    when: source.address.inCidr(['10.0.0.0/8', '10.0.0.0/33'])\n";
    let error = Policy::parse(yaml, Path::new("rules.yaml")).unwrap_err();
    let [diagnostic] = error.diagnostics.as_slice() else {
        panic!("{error}");
    };
    assert!(
        diagnostic
            .message
            .contains("\"10.0.0.0/33\" is not a CIDR range"),
        "{diagnostic}"
    );
    assert_eq!(diagnostic.column, 48, "{diagnostic}");
    all_fail(&[
        (
            "'10.1.2.3'.inCidr('::ffff:10.0.0.0/104')",
            "load: IPv4-mapped",
        ),
        (
            "inCidr('10.1.2.3', ['10.0.0.0'])",
            "load: \"10.0.0.0\" is not a CIDR range",
        ),
        // A range computed at evaluation is parsed there.
        ("'10.1.2.3'.inCidr(['10.0.0.0/' + '33'])", "eval: "),
    ]);
}
