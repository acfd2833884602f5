//! YAML reading for every file celador loads (config, rules, test suites).
//!
//! One place decides the YAML library (serde-saphyr: maintained, strict,
//! with locations) and how its errors read: the file name, line and column,
//! and a snippet of the offending line.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rendered}")]
pub struct YamlError {
    /// 1-based line of the problem, 0 when unknown.
    pub line: u64,
    /// 1-based column of the problem, 0 when unknown.
    pub column: u64,
    /// The problem alone, without location or snippet.
    pub message: String,
    /// The full message, with the file, location and a snippet.
    pub rendered: String,
}

/// Deserializes `text`, read from `path` (named in errors).
pub fn from_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, YamlError> {
    // A wide crop (the default is 64 columns each side of the error): a
    // line cut inside a credential would show a part of it that no longer
    // looks like one (the snippet is redacted below). 0 would drop the
    // snippet.
    let options = serde_saphyr::options! { crop_radius: 4096 };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let name = path.display().to_string();
        let options = serde_saphyr::render_options! { source_name: Some(name.as_str()) };
        let location = e.location();
        let plain = e.without_snippet().to_string();
        // The plain rendering starts with "error: line L column C: ".
        let raw = plain
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": ").map(|(_, m)| m.to_owned()))
            .unwrap_or(plain);
        let line = location.map_or(0, |l| l.line());
        let line_text = usize::try_from(line)
            .ok()
            .and_then(|l| text.lines().nth(l.checked_sub(1)?))
            .unwrap_or_default();
        // The message without its location, in our words, everywhere.
        let core = raw.split(" at line ").next().unwrap_or(&raw).to_owned();
        let ours = in_our_words(&core, line_text);
        // `line` and `column` say where: a diagnostic says it once.
        let message = if location.is_some() {
            ours.clone()
        } else {
            raw.replace(&core, &ours)
        };
        let rendered = e.render_with_options(options).replace(&core, &ours);
        // The snippet quotes the file, which may hold a URL's credentials
        // or a credential (`authorization: "Bearer eyJ…"`).
        let rendered = crate::redaction::without_userinfo(&rendered);
        let rendered = crate::redaction::text(&rendered).into_owned();
        YamlError {
            line,
            column: location.map_or(0, |l| l.column()),
            message,
            rendered,
        }
    })
}

/// The YAML library's message in celador's words, with a hint where a
/// common slip is likely.
fn in_our_words(message: &str, line_text: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("the key '{key}' appears twice in the same mapping");
    }
    if message.contains("while scanning a tag") && line_text.contains(": !") {
        return format!(
            "{message} (a value starting with '!' is a YAML tag: quote the condition, e.g. when: \"!has(source.id)\")"
        );
    }
    // `when: !has(source.id)`: YAML reads `!has(source.id)` as a tag on an
    // empty value.
    if message.starts_with("cannot deserialize null") {
        if line_text.contains(": !") {
            return "a value starting with '!' is a YAML tag, which leaves the value empty: quote it, e.g. when: \"!has(source.id)\"".to_owned();
        }
        return "the value is empty where text is needed".to_owned();
    }
    // A key indented further than the one above it continues that value.
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, _)) = rest.split_once('`')
        && value.contains(' ')
        && let Some((first, _)) = value.split_once(' ')
    {
        return format!(
            "'{value}' is not a value here: the next line is indented further than its key, so YAML read it as part of this value; line up the keys of one rule (and write '{first}' here)"
        );
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_messages_are_put_in_celadors_words_with_a_hint() {
        let dup = "a: 1\na: 2\n";
        let err = from_str::<serde_json::Value>(dup, Path::new("d.yaml")).unwrap_err();
        assert!(
            err.message.starts_with("the key 'a' appears twice"),
            "{}",
            err.message
        );
        assert!(
            !err.rendered.contains("DuplicateKeyPolicy"),
            "{}",
            err.rendered
        );
        assert_eq!(err.line, 2);
        let bang = "when: !source.id.startsWith(\"x\")\n";
        let err = from_str::<serde_json::Value>(bang, Path::new("b.yaml")).unwrap_err();
        assert!(
            err.message.contains("quote the condition"),
            "{}",
            err.message
        );
        assert!(
            err.rendered.contains("quote the condition"),
            "{}",
            err.rendered
        );
    }

    /// The snippet quotes the line, which loses its credentials.
    #[test]
    fn the_snippet_shows_no_credential() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let text = format!("a: {{h: \"Bearer {jwt}\", u: \"redis://:pw@h/0\"}}\na: 2\n");
        let err = from_str::<serde_json::Value>(&text, Path::new("d.yaml")).unwrap_err();
        assert_eq!(err.line, 2, "{}", err.rendered);
        let err = from_str::<serde_json::Value>(
            &format!("a: {{h: \"Bearer {jwt}\", u: \"redis://:pw@h/0\"}} ]\n"),
            Path::new("d.yaml"),
        )
        .unwrap_err();
        // The whole line is quoted, not a crop of it.
        assert!(
            err.rendered.contains("1 | a: {h: \"Bearer <redacted>\""),
            "{}",
            err.rendered
        );
        assert!(
            err.rendered.contains("redis://<redacted>@h/0"),
            "{}",
            err.rendered
        );
        assert!(!err.rendered.contains("eyJ"), "{}", err.rendered);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Rule {
        effect: Effect,
        when: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Effect {
        Allow,
    }

    #[test]
    fn a_tag_that_empties_a_value_and_a_key_indented_too_far_get_hints() {
        let bang = "effect: allow\nwhen: !has(source.id)\n";
        let err = from_str::<Rule>(bang, Path::new("b.yaml")).unwrap_err();
        assert!(
            err.message
                .contains("a value starting with '!' is a YAML tag"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("Option<"), "{}", err.message);
        let indented = "effect: allow\n when: request.method == 'GET'\n";
        let err = from_str::<Rule>(indented, Path::new("i.yaml")).unwrap_err();
        assert!(
            err.message
                .contains("the next line is indented further than its key"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("write 'allow' here"),
            "{}",
            err.message
        );
    }
}
