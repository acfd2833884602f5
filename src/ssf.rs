//! Risk signals from security tools: the OpenID Shared Signals Framework
//! 1.0 (SSF), its event profiles CAEP 1.0 and RISC 1.0, carried as Security
//! Event Tokens (RFC 8417, "SETs") pushed to celador (RFC 8935).
//!
//! Data flow:
//!
//! ```text
//! transmitter --POST application/secevent+jwt--> receiver (celador signals serve)
//!   set        the SET verified against its transmitter (signature, typ, iss, aud, iat, jti)
//!   jwks       a transmitter's keys fetched from its JWKS URL, kept fresh
//!   poll       SETs polled from a transmitter's endpoint (RFC 8936), acknowledged
//!   subject    its subject (RFC 9493) -> the SPIFFE IDs it names
//!   event      each CAEP / RISC event -> governance actions (revoke, unrevoke, risk)
//!   receiver   actions -> the governance sink; 202, or 400 with the RFC 8935 error
//!   sink/store a revocations file (and a risks file), or the fleet's governance
//!              store (Redis), which also holds the fleet's jti replay memory
//! ```
//!
//! Nothing of a SET that does not verify goes past [`set`]; nothing here
//! touches the request path: sidecars see the actions as governance state.

pub mod config;
pub mod event;
pub mod jwks;
pub mod poll;
pub mod receiver;
pub mod server;
pub mod set;
pub mod sink;
pub mod store;
pub mod subject;
