//! The `x-forwarded-client-cert` header, as any client or proxy may write it.
#![no_main]
use celador::engine::identity::xfcc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = celador_fuzz::split(data, 2);
    let elements = xfcc::parse(&parts[0]);
    let _ = xfcc::chain_for_leaf(&elements, &parts[1]);
});
