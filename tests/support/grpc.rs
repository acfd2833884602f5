//! Calls on celador's Check method over a raw HTTP/2 connection (the `h2`
//! crate), for what a tonic client will not send: streams cancelled at
//! will, bytes that are no valid message, thousands of streams at once.

use std::net::SocketAddr;

use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use h2::client::{ResponseFuture, SendRequest};
use prost::Message;

/// An HTTP/2 connection to celador.
pub struct Connection {
    /// Opens streams.
    pub sender: SendRequest<Bytes>,
    /// The connection's task: it ends when either side closes it.
    pub task: tokio::task::JoinHandle<Result<(), h2::Error>>,
    /// The address.
    pub addr: SocketAddr,
}

impl Connection {
    /// Connects to `addr` (prior-knowledge HTTP/2, as Envoy's gRPC client).
    pub async fn open(addr: SocketAddr) -> Connection {
        Connection::open_with(addr, h2::client::Builder::new()).await
    }

    /// [`Connection::open`] with the client settings of `builder`.
    pub async fn open_with(addr: SocketAddr, builder: h2::client::Builder) -> Connection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, connection) = builder.handshake(tcp).await.unwrap();
        let task = tokio::spawn(connection);
        let sender = sender.ready().await.unwrap();
        Connection { sender, task, addr }
    }

    /// Starts a Check call with `grpc-timeout: timeout` (none if `None`):
    /// the response to come and the stream to send the body on.
    pub async fn start(
        &mut self,
        timeout: Option<&str>,
    ) -> Result<(ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        let sender = self.sender.clone().ready().await?;
        self.sender = sender;
        self.sender.send_request(head(self.addr, timeout), false)
    }

    /// A whole Check call with `body` (a framed message, see [`framed`]).
    pub async fn call(&mut self, timeout: Option<&str>, body: Bytes) -> Result<Answer, h2::Error> {
        let (response, mut stream) = self.start(timeout).await?;
        stream.send_data(body, true)?;
        answer(response).await
    }
}

/// The request head of a Check call, as Envoy's gRPC client sends it.
pub fn head(addr: SocketAddr, timeout: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::post(format!(
        "http://{addr}/envoy.service.auth.v3.Authorization/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", timeout);
    }
    request.body(()).unwrap()
}

/// `message` with the gRPC prefix: not compressed, and its length.
pub fn framed(message: &[u8]) -> Bytes {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

/// What came back for one call.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `grpc-status`, from the trailers or a trailers-only response.
    pub grpc_status: Option<String>,
    /// `grpc-message`, likewise.
    pub grpc_message: Option<String>,
    /// The `CheckResponse`, when one came.
    pub response: Option<CheckResponse>,
}

/// Reads the whole answer to a call.
pub async fn answer(response: ResponseFuture) -> Result<Answer, h2::Error> {
    let response = response.await?;
    let status = response.status().as_u16();
    let header = |headers: &http::HeaderMap, name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    let (grpc_status, grpc_message) = (
        header(response.headers(), "grpc-status"),
        header(response.headers(), "grpc-message"),
    );
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let response = (data.len() >= 5).then(|| CheckResponse::decode(&data[5..]).unwrap());
    Ok(Answer {
        status,
        grpc_status: grpc_status.or_else(|| header(&trailers, "grpc-status")),
        grpc_message: grpc_message.or_else(|| header(&trailers, "grpc-message")),
        response,
    })
}
