//! The celador binary.
fn main() {}
