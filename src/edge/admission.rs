//! Admission: how many checks celador holds at once, how many request
//! bytes they buffer, and how long one may wait in celador.
//!
//! Data flow: the Check service ([`super::service`]) stamps each call's
//! arrival before anything else and reads its deadline from `grpc-timeout`
//! (Envoy sends its ext_authz `timeout` so). It takes a check slot before
//! reading anything, and the message's bytes, sized from the gRPC length
//! prefix, before buffering the rest of it. A check that finds no slot or no
//! room for its bytes is denied `overloaded` at once, unread: it does not
//! queue, because a queued check's message would stay in the HTTP/2
//! connection's flow-control window, which all checks on that connection
//! share, and stall the checks being read (tests/transport.rs). A check
//! that holds its slot may wait, for the rest of its message and for the
//! CPU, until [`Admission::wait_until`]; then it is denied `overloaded`.
//! Either is a denial with a reason, never a reset or an error status,
//! which a fail-open Envoy would take as an allow.

use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds on checks in flight, set once at start-up (`limits` in the
/// config).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The largest `CheckRequest` read, in bytes; a larger one is denied
    /// (`invalid_request`) without being read.
    pub max_request_bytes: usize,
    /// `CheckRequest` bytes buffered at once across all checks. A message
    /// larger than this is admitted only when it can take the whole budget,
    /// and so is buffered alone.
    pub buffered_bytes: usize,
    /// Checks held at once, from their arrival to their answer.
    pub checks: usize,
    /// The share of its deadline a check may spend in celador before it is
    /// decided (waiting for its message, for the CPU); past it, it is
    /// denied `overloaded`. The rest of the deadline is left for deciding,
    /// for the answer's way back, and for an Envoy that is itself short of
    /// CPU.
    pub deadline_share: f64,
    /// The deadline of a check that comes without `grpc-timeout`.
    pub default_deadline: Duration,
    /// HTTP/2 stream flow-control window: request bytes a stream may send
    /// before celador reads them.
    pub stream_window: u32,
    /// HTTP/2 connection flow-control window: request bytes one connection
    /// may send before celador reads them.
    pub connection_window: u32,
}

impl Default for Limits {
    /// Sized for a sidecar limited to 64 MiB (see the README's
    /// Configuration).
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 << 20,
            // With the rest, a flood of 16,000 streams of 56 KB checks
            // peaked at 44 MiB (with 16 MiB: 55 MiB; BENCHMARKS.md).
            buffered_bytes: 8 << 20,
            checks: 1024,
            deadline_share: 0.5,
            default_deadline: Duration::from_secs(1),
            stream_window: 256 << 10,
            connection_window: 256 << 10,
        }
    }
}

/// The semaphores that bound checks in flight, shared by every connection.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    /// The byte budget, as a semaphore holds it.
    budget: u32,
    checks: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// A check's slot: held from its arrival until it is answered, with the
/// bytes of its message once it has them.
#[derive(Debug)]
pub struct Slot {
    _check: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// Admission within `limits`.
    pub fn new(limits: Limits) -> Self {
        // A tokio semaphore holds at most `MAX_PERMITS`, and gives at most
        // `u32::MAX` at once.
        let budget = u32::try_from(limits.buffered_bytes.min(Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        Admission {
            checks: Arc::new(Semaphore::new(
                limits.checks.clamp(1, Semaphore::MAX_PERMITS),
            )),
            bytes: Arc::new(Semaphore::new(budget as usize)),
            budget,
            limits,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When a check that `arrived` with `grpc_timeout` has waited as long as
    /// it may: its deadline's share from its arrival.
    pub fn wait_until(&self, arrived: Instant, grpc_timeout: Option<Duration>) -> Instant {
        // An hour is beyond any ext_authz timeout, and keeps the sum in range.
        let deadline = grpc_timeout
            .unwrap_or(self.limits.default_deadline)
            .min(Duration::from_secs(3600));
        let wait = deadline.mul_f64(self.limits.deadline_share.clamp(0.0, 1.0));
        arrived.checked_add(wait).unwrap_or(arrived)
    }

    /// A check slot, if one is free.
    pub fn enter(&self) -> Option<Slot> {
        let check = Arc::clone(&self.checks).try_acquire_owned().ok()?;
        Some(Slot {
            _check: check,
            bytes: None,
        })
    }

    /// Takes `len` bytes of the budget for `slot`'s message (the whole
    /// budget for a message larger than it); false if they are not free.
    pub fn reserve(&self, slot: &mut Slot, len: usize) -> bool {
        let wanted = u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.budget);
        match Arc::clone(&self.bytes).try_acquire_many_owned(wanted) {
            Ok(permit) => {
                slot.bytes = Some(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Checks held now, and bytes of the budget taken.
    pub fn in_use(&self) -> (usize, usize) {
        let checks = self.limits.checks.clamp(1, Semaphore::MAX_PERMITS);
        (
            checks - self.checks.available_permits(),
            self.budget as usize - self.bytes.available_permits(),
        )
    }
}

/// The `grpc-timeout` header's value as a duration: at most 8 digits and a
/// unit (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 protocol
/// defines it. Anything else is no deadline.
pub fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        for (text, expected) in [
            ("500m", Some(Duration::from_millis(500))),
            ("1S", Some(Duration::from_secs(1))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("250000u", Some(Duration::from_millis(250))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            ("123456789m", None),
            ("m", None),
            ("", None),
            ("5", None),
            ("5s", None),
            ("-5S", None),
            ("1.5S", None),
        ] {
            assert_eq!(grpc_timeout(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn a_check_may_wait_its_deadlines_share_and_no_header_means_the_default() {
        let admission = Admission::new(Limits::default());
        let now = Instant::now();
        assert_eq!(
            admission.wait_until(now, Some(Duration::from_millis(200))),
            now + Duration::from_millis(100)
        );
        assert_eq!(
            admission.wait_until(now, None),
            now + Duration::from_millis(500)
        );
        // A deadline beyond reason waits half an hour at most.
        assert_eq!(
            admission.wait_until(now, grpc_timeout(b"99999999H")),
            now + Duration::from_secs(1800)
        );
    }

    #[test]
    fn slots_and_bytes_are_bounded_and_given_back_when_answered() {
        let admission = Admission::new(Limits {
            checks: 2,
            buffered_bytes: 100,
            ..Limits::default()
        });
        let mut first = admission.enter().unwrap();
        assert!(admission.reserve(&mut first, 60));
        let mut second = admission.enter().unwrap();
        assert_eq!(admission.in_use(), (2, 60));
        // No third slot, and no 60 more bytes, until the first is answered.
        assert!(admission.enter().is_none());
        assert!(!admission.reserve(&mut second, 60));
        drop(first);
        assert_eq!(admission.in_use(), (1, 0));
        // A message larger than the budget takes all of it.
        assert!(admission.reserve(&mut second, 1_000));
        assert_eq!(admission.in_use(), (1, 100));
        drop(second);
        assert_eq!(admission.in_use(), (0, 0));
    }
}
