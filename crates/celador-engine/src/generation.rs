//! Generations: the one counter that numbers every live input the engine
//! builds (a rules file, a trust bundle, grants, revocations).
//!
//! Data flow: each input takes the next generation when it is parsed; the
//! verified-credential and decision caches key on the generations in force,
//! so that a new input invalidates what the old one decided. Drawn from one
//! counter, a generation is unique for the life of the process across every
//! kind of input, so no two inputs can ever be mistaken for each other.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The next generation: never the same twice, never 0.
pub(crate) fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generations_are_unique_and_increase() {
        let a = super::next();
        let b = super::next();
        assert!(a > 0 && b > a, "{a} then {b}");
    }
}
