//! A `CheckRequest` through the whole decision: decoded from raw protobuf,
//! or a valid request whose fields the input replaces.
#![no_main]
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(request) = CheckRequest::decode(rest) {
            celador_fuzz::check(&request);
        }
        return;
    }
    let p = celador_fuzz::split(rest, 8);
    let certificate = if p[0].is_empty() {
        celador_fuzz::pki().leaf.clone()
    } else {
        p[0].clone()
    };
    let mut request = celador_fuzz::request(
        &certificate,
        &p[1],
        &p[2],
        &[
            ("authorization", &p[3]),
            ("x-pattern", &p[4]),
            (&p[5], &p[6]),
        ],
    );
    if let Some(attrs) = request.attributes.as_mut() {
        attrs
            .context_extensions
            .insert("celador.identity".into(), p[7].clone());
        attrs
            .context_extensions
            .insert("route".into(), p[7].clone());
        if let Some(http) = attrs.request.as_mut().and_then(|r| r.http.as_mut()) {
            http.size = i64::from(rest.len() as u32) - 50;
        }
    }
    celador_fuzz::check(&request);
});
