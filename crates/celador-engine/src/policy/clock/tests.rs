#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use crate::policy::footprint::Footprint;
use crate::policy::functions::environment;

fn footprint(source: &str) -> Footprint {
    Footprint::of(&environment().parser().parse(source).unwrap())
}

#[test]
fn calendar_accessors_and_literal_instants_are_bounded_reads() {
    let f = footprint(
        r#"request.time.getHours("Europe/Paris") >= 9 && now.getDayOfWeek() < 6 && request.time < timestamp("2027-01-01T00:00:00Z") && timestamp("2026-01-01T00:00:00Z") <= now"#,
    );
    assert!(f.cacheable(), "{f:?}");
    assert_eq!(f.volatile, BTreeSet::from(["now", "request.time"]));
    assert_eq!(f.clock.len(), 4, "{f:?}");
    // Each text parses back to an expression with the same text.
    for text in &f.clock {
        let again = crate::policy::unparse::unparse(&environment().parser().parse(text).unwrap());
        assert_eq!(&again, text);
    }
    // Any other read of the clock is not bounded.
    for source in [
        "request.time.getHours() < 9 || request.time > now",
        "[request.time].exists(t, t.getHours() < 9)",
        "request.time - duration(\"1h\") < timestamp(\"2027-01-01T00:00:00Z\")",
    ] {
        assert!(!footprint(source).cacheable(), "{source}");
    }
    // A macro's variable named `now` is not the clock.
    for source in [
        "[timestamp(\"2026-01-01T00:00:00Z\")].exists(now, now.getHours() < 9)",
        "[{\"time\": 1}].exists(request, request.time == 1)",
    ] {
        let f = footprint(source);
        assert!(f.cacheable() && f.clock.is_empty(), "{source}: {f:?}");
    }
}
