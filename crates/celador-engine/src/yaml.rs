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
    // No snippet from the library: it crops the line before the redaction
    // below could see a whole credential, and places the caret in its crop.
    let options = serde_saphyr::options! { crop_radius: 0 };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
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
            .and_then(|l| text.lines().nth(l.checked_sub(1)?));
        // The message without its location, in our words, everywhere.
        let core = raw.split(" at line ").next().unwrap_or(&raw).to_owned();
        let ours = in_our_words(&core, line_text.unwrap_or_default());
        // `line` and `column` say where: a diagnostic says it once.
        let message = if location.is_some() {
            ours.clone()
        } else {
            raw.replace(&core, &ours)
        };
        let column = location.map_or(0, |l| l.column());
        // Rendered as every diagnostic is: the whole line redacted, then
        // cropped around the true column, the caret under it.
        let mut rendered = format!("error: {message}");
        let place = (
            usize::try_from(line).unwrap_or(0),
            usize::try_from(column).unwrap_or(0),
        );
        // Writing to a String does not fail.
        let _ = crate::snippet::write_place(&mut rendered, path, place, line_text);
        YamlError {
            line,
            column,
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

    /// A long line is redacted whole before it is cropped (the library's
    /// own snippet showed 24 of a token's 40 characters), and placed at
    /// its true column, not the crop's.
    #[test]
    fn a_long_line_is_redacted_before_it_is_cropped_and_placed_truly() {
        let token = "9f8a7b6c5d4e3f2a1b0c9f8a7b6c5d4e5f6a7b8c";
        let text = format!("{{a: \"{} Bearer {token}\", a: 1}}", "y".repeat(120));
        let err = from_str::<serde_json::Value>(&text, Path::new("d.yaml")).unwrap_err();
        let r = &err.rendered;
        assert!(!r.contains("1b0c9f8a"), "{r}");
        assert!(r.contains("Bearer <redacted>\", a: 1}"), "{r}");
        let at = text.rfind("a: 1").unwrap() + 1;
        assert_eq!((err.line, err.column), (1, at as u64), "{r}");
        assert!(r.contains(&format!(" --> d.yaml:1:{at}\n")), "{r}");
        // The caret stands under the duplicate key in what is shown.
        let (quoted, caret) = r.rsplit_once('\n').unwrap();
        let shown = quoted.rsplit_once('\n').unwrap().1;
        let caret_at = caret.find('^').unwrap();
        assert_eq!(&shown[caret_at..caret_at + 4], "a: 1", "{r}");
        // A megabyte on one line is quoted as a window of it.
        let long = format!("a: [{}, ]]", "1, ".repeat(300_000));
        let err = from_str::<serde_json::Value>(&long, Path::new("l.yaml")).unwrap_err();
        assert!(err.column > 100_000, "{}", err.column);
        assert!(err.rendered.len() < 600, "{}", err.rendered.len());
        assert!(
            err.rendered.contains(&format!("l.yaml:1:{}", err.column)),
            "{}",
            err.rendered
        );
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
