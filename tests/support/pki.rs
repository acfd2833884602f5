//! Test PKI: roots, intermediates and X.509-SVIDs generated in the test with
//! rcgen, shared by unit tests, integration tests and benchmarks.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::time::Duration;
use time::OffsetDateTime;

/// A certificate authority: a root or an intermediate.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    /// The CA certificate, DER.
    pub der: Vec<u8>,
}

impl Ca {
    /// A self-signed root named `name`.
    pub fn root(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A self-signed root whose name is `name`, RDN by RDN in order.
    pub fn root_named(name: &[(DnType, rcgen::DnValue)]) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params("");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in name {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A self-signed root valid from `start` to `end` seconds relative to
    /// now.
    pub fn root_valid_secs(name: &str, start: i64, end: i64) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(start);
        params.not_after = now + time::Duration::seconds(end);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one whose key usage is `usages`
    /// (empty: no key usage extension at all).
    pub fn intermediate_with_key_usages(&self, name: &str, usages: Vec<KeyUsagePurpose>) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        params.key_usages = usages;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        self.intermediate_valid_secs(name, -86_400, 86_400 * 365)
    }

    /// An intermediate CA valid from `start` to `end` seconds relative to now.
    pub fn intermediate_valid_secs(&self, name: &str, start: i64, end: i64) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(start);
        params.not_after = now + time::Duration::seconds(end);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An X.509-SVID for `spiffe_id`, with the SPIFFE spec's defaults.
    pub fn svid(&self, spiffe_id: &str) -> Leaf {
        self.leaf().uri(spiffe_id).build()
    }

    /// A leaf with SPIFFE-conformant defaults, to adjust before `build`.
    pub fn leaf(&self) -> LeafBuilder<'_> {
        LeafBuilder {
            ca: self,
            uris: Vec::new(),
            dns: Vec::new(),
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            not_before: OffsetDateTime::now_utc() - Duration::from_secs(3600),
            not_after: OffsetDateTime::now_utc() + Duration::from_secs(3600),
            common_name: None,
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(86_400);
    params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(86_400 * 365);
    params
}

/// Settings of a leaf certificate.
pub struct LeafBuilder<'a> {
    ca: &'a Ca,
    uris: Vec<String>,
    dns: Vec<String>,
    is_ca: bool,
    key_usages: Vec<KeyUsagePurpose>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    common_name: Option<String>,
}

impl LeafBuilder<'_> {
    /// Adds a URI SAN.
    pub fn uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_owned());
        self
    }
    /// Adds a DNS SAN.
    pub fn dns(mut self, name: &str) -> Self {
        self.dns.push(name.to_owned());
        self
    }
    /// Sets the subject CN.
    pub fn common_name(mut self, cn: &str) -> Self {
        self.common_name = Some(cn.to_owned());
        self
    }
    /// Makes the leaf a CA (`cA=true`), with CA key usages.
    pub fn ca_flag(mut self) -> Self {
        self.is_ca = true;
        self.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        self
    }
    /// Replaces the key usages (empty: no key usage extension).
    pub fn key_usages(mut self, usages: Vec<KeyUsagePurpose>) -> Self {
        self.key_usages = usages;
        self
    }
    /// Valid from `start` to `end` seconds relative to now.
    pub fn valid_secs(mut self, start: i64, end: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + time::Duration::seconds(start);
        self.not_after = now + time::Duration::seconds(end);
        self
    }
    /// Signs the leaf.
    pub fn build(self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            self.common_name.as_deref().unwrap_or("workload"),
        );
        for uri in &self.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().unwrap()));
        }
        for dns in &self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into().unwrap()));
        }
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = self.key_usages;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.ca.issuer).unwrap();
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A leaf certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Leaf {
    /// The certificate as Envoy puts it in `source.certificate`.
    pub fn envoy_encoded(&self) -> String {
        url_encode(&self.pem)
    }
}

/// Percent-encodes like Envoy does for certificates: everything but
/// unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Hex SHA-256, as Envoy writes in the XFCC `Hash=`.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An XFCC header as Envoy writes it with `SANITIZE_SET` and chain details.
pub fn xfcc_with_chain(leaf: &Leaf, intermediates: &[&Ca]) -> String {
    let mut chain = leaf.pem.clone();
    for ca in intermediates {
        chain.push_str(&ca.pem);
    }
    format!(
        "Hash={};Cert=\"{}\";Chain=\"{}\"",
        sha256_hex(&leaf.der),
        url_encode(&leaf.pem),
        url_encode(&chain)
    )
}
