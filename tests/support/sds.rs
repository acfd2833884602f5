//! Envoy's Secret Discovery Service as a SPIRE agent serves it, for tests:
//! the SVID as the secret `default` and the trust bundle as `ROOTCA` (the
//! agent's default names), answered on the agent's socket beside the
//! Workload API (see [`super::workload_api::WorkloadApi::start_agent`]).

use std::pin::Pin;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What the agent hands Envoy.
#[derive(Clone)]
pub struct Sds {
    /// The SVID's chain, PEM.
    pub svid_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The trust bundle, PEM.
    pub bundle_pem: String,
}

impl Sds {
    /// The gRPC service.
    pub fn service(self) -> SecretDiscoveryServiceServer<Sds> {
        SecretDiscoveryServiceServer::new(self)
    }

    fn secret(&self, name: &str) -> Option<Any> {
        let inline = |pem: &str| DataSource {
            specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
            ..DataSource::default()
        };
        let kind = match name {
            "default" => secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&self.svid_pem)),
                private_key: Some(inline(&self.key_pem)),
                ..TlsCertificate::default()
            }),
            "ROOTCA" => secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(&self.bundle_pem)),
                ..CertificateValidationContext::default()
            }),
            _ => return None,
        };
        let secret = Secret {
            name: name.to_owned(),
            r#type: Some(kind),
        };
        Some(Any {
            type_url: SECRET_TYPE.to_owned(),
            value: secret.encode_to_vec(),
        })
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = Streamed<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Streamed<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "this test agent serves state-of-the-world SDS",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let sds = self.clone();
        tokio::spawn(async move {
            let mut nonce = 0u64;
            while let Some(Ok(request)) = requests.next().await {
                // An ACK (or NACK) of what was sent: nothing new to send.
                if !request.response_nonce.is_empty() {
                    continue;
                }
                nonce += 1;
                let resources = request
                    .resource_names
                    .iter()
                    .filter_map(|n| sds.secret(n))
                    .collect();
                let response = DiscoveryResponse {
                    version_info: "1".to_owned(),
                    resources,
                    type_url: SECRET_TYPE.to_owned(),
                    nonce: nonce.to_string(),
                    ..DiscoveryResponse::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let resources = request
            .get_ref()
            .resource_names
            .iter()
            .filter_map(|n| self.secret(n))
            .collect();
        Ok(Response::new(DiscoveryResponse {
            version_info: "1".to_owned(),
            resources,
            type_url: SECRET_TYPE.to_owned(),
            ..DiscoveryResponse::default()
        }))
    }
}
