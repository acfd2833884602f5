use super::*;

fn canonical(raw: &str) -> (String, Option<Ambiguity>) {
    let c = canonicalize(raw);
    (c.path.into_owned(), c.ambiguity)
}

#[test]
fn a_canonical_path_is_borrowed_and_unambiguous() {
    for raw in [
        "/",
        "/export/daily.csv",
        "/export/",
        "/a/b.c/d..e/.hidden/...",
        "/caf\u{e9}/%C3%A9",
        "*",
        "",
    ] {
        let c = canonicalize(raw);
        assert!(matches!(c.path, Cow::Borrowed(_)), "{raw}");
        assert_eq!((c.path.as_ref(), c.ambiguity), (raw, None), "{raw}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_other_hex_is_upper_case_without_ambiguity() {
    assert_eq!(canonical("/%61dmin/%7euser"), ("/admin/~user".into(), None));
    assert_eq!(canonical("/a%2db%5F"), ("/a-b_".into(), None));
    assert_eq!(canonical("/q%3fx/%c3%a9"), ("/q%3Fx/%C3%A9".into(), None));
    assert_eq!(canonical("/a%20b"), ("/a%20b".into(), None));
}

#[test]
fn slashes_are_merged_without_ambiguity_but_a_leading_pair_is_ambiguous() {
    assert_eq!(canonical("/a//b///c/"), ("/a/b/c/".into(), None));
    assert_eq!(canonical("/a//"), ("/a/".into(), None));
    assert_eq!(
        canonical("//evil/admin"),
        ("/evil/admin".into(), Some(Ambiguity::LeadingDoubleSlash))
    );
}

#[test]
fn dot_segments_are_removed_and_ambiguous() {
    let dot = Some(Ambiguity::DotSegment);
    for (raw, path) in [
        ("/export/../pay", "/pay"),
        ("/export/./a", "/export/a"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/.", "/"),
        // Merged first, as Tomcat and nginx do.
        ("/a//../b", "/b"),
    ] {
        assert_eq!(canonical(raw), (path.into(), dot), "{raw}");
    }
}

#[test]
fn encoded_dots_in_any_case_are_decoded_and_ambiguous() {
    let dot = Some(Ambiguity::EncodedDot);
    assert_eq!(canonical("/export/%2e%2e/pay"), ("/pay".into(), dot));
    assert_eq!(canonical("/export/%2E%2e/pay"), ("/pay".into(), dot));
    assert_eq!(canonical("/export/.%2E/pay"), ("/pay".into(), dot));
    // Not a dot segment once decoded, still a spelling servers disagree on.
    assert_eq!(canonical("/file%2ejson"), ("/file.json".into(), dot));
}

#[test]
fn encoded_slashes_and_backslashes_are_kept_encoded_and_ambiguous() {
    let slash = Some(Ambiguity::EncodedSlash);
    assert_eq!(
        canonical("/export/..%2fpay"),
        ("/export/..%2Fpay".into(), slash)
    );
    assert_eq!(
        canonical("/export/..%2Fpay"),
        ("/export/..%2Fpay".into(), slash)
    );
    assert_eq!(
        canonical("/export/..%5cpay"),
        ("/export/..%5Cpay".into(), slash)
    );
    assert_eq!(canonical("/a%5Cb"), ("/a%5Cb".into(), slash));
}

#[test]
fn backslashes_are_slashes_and_ambiguous() {
    let back = Some(Ambiguity::Backslash);
    assert_eq!(canonical("/export/..\\pay"), ("/pay".into(), back));
    assert_eq!(canonical("\\admin"), ("/admin".into(), back));
    assert_eq!(canonical("/a\\b"), ("/a/b".into(), back));
}

#[test]
fn path_parameters_are_ambiguous_before_and_inside_dot_segments_and_anywhere() {
    // `..;` is a parent segment to Tomcat, Jetty and Spring.
    assert_eq!(
        canonical("/export/..;/pay"),
        ("/export/..;/pay".into(), Some(Ambiguity::DotSegment))
    );
    assert_eq!(
        canonical("/export/.;x=1/pay"),
        ("/export/.;x=1/pay".into(), Some(Ambiguity::DotSegment))
    );
    assert_eq!(
        canonical("/export/..;"),
        ("/export/..;".into(), Some(Ambiguity::DotSegment))
    );
    // Decoded, `%2e%2e;` is `..;`.
    assert_eq!(
        canonical("/export/%2e%2e;/admin"),
        ("/export/..;/admin".into(), Some(Ambiguity::EncodedDot))
    );
    // Tomcat serves `/admin;x=1` as `/admin`.
    for raw in ["/admin;x=1", "/a;jsessionid=1/b", "/admin%3bx", "/admin%3B"] {
        assert_eq!(
            canonicalize(raw).ambiguity,
            Some(Ambiguity::PathParameter),
            "{raw}"
        );
    }
}

#[test]
fn nul_control_characters_and_malformed_or_double_escapes_are_ambiguous() {
    for (raw, ambiguity) in [
        ("/a%00b", Ambiguity::Nul),
        ("/a\u{0}b", Ambiguity::Nul),
        ("/a\tb", Ambiguity::ControlCharacter),
        ("/a\u{7f}", Ambiguity::ControlCharacter),
        ("/%u002e%u002e/admin", Ambiguity::BadEscape),
        ("/a%", Ambiguity::BadEscape),
        ("/a%4", Ambiguity::BadEscape),
        ("/a%zz", Ambiguity::BadEscape),
        ("/%252e%252e/admin", Ambiguity::DoubleEncoding),
    ] {
        assert_eq!(canonicalize(raw).ambiguity, Some(ambiguity), "{raw:?}");
    }
    // A literal percent sign, encoded, is fine; a `%` that starts no escape
    // is written encoded, so that nothing decoded after it completes one.
    assert_eq!(canonical("/100%25"), ("/100%25".into(), None));
    assert_eq!(canonical("/100%25x"), ("/100%25x".into(), None));
    assert_eq!(canonical("/a%zz").0, "/a%25zz");
    assert_eq!(canonical("/a%").0, "/a%25");
    assert_eq!(canonical("/%252e").0, "/%252e");
    // The fuzzer's finding: `%e` then `%33` (`3`) must not become `%e3`.
    assert_eq!(canonical("/ca%e%33r").0, "/ca%25e3r");
}

#[test]
fn the_most_telling_ambiguity_is_reported_and_every_one_is_described() {
    assert_eq!(
        canonicalize("/a\\..;/%2e").ambiguity,
        Some(Ambiguity::EncodedDot)
    );
    assert_eq!(
        canonicalize("//a;b/../c").ambiguity,
        Some(Ambiguity::DotSegment)
    );
    for a in [
        Ambiguity::DotSegment,
        Ambiguity::EncodedDot,
        Ambiguity::EncodedSlash,
        Ambiguity::Backslash,
        Ambiguity::PathParameter,
        Ambiguity::Nul,
        Ambiguity::ControlCharacter,
        Ambiguity::BadEscape,
        Ambiguity::DoubleEncoding,
        Ambiguity::LeadingDoubleSlash,
    ] {
        assert!(a.describe().starts_with("the path "), "{a:?}");
    }
}

#[test]
fn a_path_without_a_leading_slash_keeps_its_structure() {
    assert_eq!(canonical("*"), ("*".into(), None));
    assert_eq!(
        canonical("a/../b"),
        ("a/../b".into(), Some(Ambiguity::DotSegment))
    );
    assert_eq!(canonical("%61/b"), ("a/b".into(), None));
}

#[test]
fn canonical_paths_are_fixed_points_and_have_no_dot_segments_or_double_slashes() {
    for raw in [
        "/export/../pay",
        "/a//b/./c/..",
        "/%2e%2e/%2E/x",
        "/x/..%2f..%2fy",
        "\\\\a\\..\\b",
        "/%252e/%u002e/%zz%",
        "/a;b/..;/c",
        "//x//y",
        "ca\u{fffd}7%e%33r%33r",
        "/%%32%65%%32%65/admin",
    ] {
        let once = canonicalize(raw).path.into_owned();
        assert_eq!(canonicalize(&once).path, once, "{raw}");
        assert!(!once.contains("//"), "{raw}: {once}");
        assert!(
            once.split('/').all(|s| s != "." && s != ".."),
            "{raw}: {once}"
        );
    }
}

#[test]
fn the_mode_is_read_from_its_config_names() {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        paths: PathMode,
    }
    for (text, mode) in [
        ("paths: canonical", PathMode::Canonical),
        ("paths: reject_ambiguous", PathMode::RejectAmbiguous),
        ("paths: raw", PathMode::Raw),
    ] {
        let w: Wrapper = serde_json::from_value(serde_json::json!({
            "paths": text.trim_start_matches("paths: ")
        }))
        .unwrap();
        assert_eq!(w.paths, mode);
    }
    assert_eq!(PathMode::default(), PathMode::RejectAmbiguous);
}
