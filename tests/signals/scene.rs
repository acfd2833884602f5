//! The scene most signals tests build: a directory holding the receiver's
//! TLS certificate and key (from a server CA of its own), the receiver
//! started on the `receiver.yaml` a test writes there, and SETs signed and
//! pushed to it (RFC 8935). Each test still writes its own configs.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::support::celador::Celador;
use super::support::https::{Reply, tls_post};
use super::support::jwt::{self, Signer};
use super::support::pki::Ca;
use super::support::redis::Redis;
use super::{AUD, IDP, RISC, Receiver, now};

/// The policy of the tests that need every identity of the trust domain
/// allowed.
pub const ANYONE: &str = "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n";

/// A `celador.yaml` reading governance from the store at `url`, with
/// `governance` (indented lines) added to its `governance:` mapping.
pub fn store_celador(url: &str, governance: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
         worker_threads: 1\ngovernance:\n  store: {url}\n{governance}log:\n  format: json\n"
    )
}

/// A `receiver.yaml` taking the IdP's SETs (keys in `idp.json`) into the
/// store at `url`.
pub fn store_receiver(url: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
         transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
         sink: {{store: {url}}}\nlog: {{format: json}}\n"
    )
}

/// A test's directory and the CA the receiver's server certificate
/// (`tls.crt`, `tls.key`, for `localhost`) is issued by.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub server_ca: Ca,
}

impl Scene {
    pub fn new() -> Scene {
        let scene = Scene {
            dir: tempfile::tempdir().unwrap(),
            server_ca: Ca::root("signals server CA"),
        };
        let server = scene.server_ca.leaf().dns("localhost").build();
        scene.write("tls.crt", &server.pem);
        scene.write("tls.key", &server.key_pem);
        scene
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// `path` and `write` for the test's own files, as closures.
    pub fn files(&self) -> (impl Fn(&str) -> PathBuf + '_, impl Fn(&str, &str) + '_) {
        (|name| self.path(name), |name, text| self.write(name, text))
    }

    /// The IdP's signer (ES256, `idp-1`), its JWKS written as `idp.json`.
    pub fn idp(&self) -> Signer {
        let idp = Signer::es256("idp-1");
        self.write("idp.json", &jwt::jwks(&[&idp]));
        idp
    }

    /// The trust domain's CA, its bundle written as `example.org.pem`.
    pub fn trust_domain(&self) -> Ca {
        let ca = Ca::root("example.org");
        self.write("example.org.pem", &ca.pem);
        ca
    }

    /// A `celador serve` on this scene's `celador.yaml`.
    pub fn celador(&self) -> Celador {
        Celador::start(&self.path("celador.yaml"))
    }

    /// A receiver on this scene's `receiver.yaml`.
    pub fn receiver(&self) -> Receiver {
        Receiver::start(&self.path("receiver.yaml"))
    }

    /// Pushes `token` to `receiver` as a SET (with `headers` besides the
    /// content type).
    pub fn push_with(&self, receiver: &Receiver, token: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/secevent+jwt")];
        all.extend_from_slice(headers);
        tls_post(
            receiver.addr,
            &self.server_ca.pem,
            "/events",
            &all,
            token.as_bytes(),
        )
    }

    pub fn push(&self, receiver: &Receiver, token: &str) -> Reply {
        self.push_with(receiver, token, &[])
    }

    /// Pushes `token` and asserts it was accepted (202).
    pub fn push_ok(&self, receiver: &Receiver, token: &str) {
        let reply = self.push(receiver, token);
        assert_eq!(reply.status, 202, "{reply:?} {}", receiver.log());
    }
}

/// `claims` signed by `signer` with a SET's header.
pub fn sign(signer: &Signer, claims: &Value) -> String {
    signer.token_with_header(
        &json!({"alg": signer.alg, "kid": signer.kid, "typ": "secevent+jwt"}),
        claims,
    )
}

/// A SET from the IdP about the SPIFFE ID `id`, issued now.
pub fn uri_set(signer: &Signer, jti: &str, id: &str, events: Value) -> String {
    sign(
        signer,
        &json!({"iss": IDP, "aud": AUD, "iat": now(), "jti": jti,
                "sub_id": {"format": "uri", "uri": id}, "events": events}),
    )
}

/// A RISC credential-compromise event about an X.509 credential.
pub fn x509_compromise() -> Value {
    json!({format!("{RISC}credential-compromise"): {"credential_type": "x509"}})
}

/// Whether the store holds a revocation of the SPIFFE ID `id`.
pub fn revoked(redis: &Redis, id: &str) -> bool {
    redis
        .cli(&[
            "HEXISTS",
            "{celador}:revocations",
            &format!("spiffe_id:{id}"),
        ])
        .trim()
        == "1"
}
