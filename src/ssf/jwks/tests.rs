use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::testing::jwt::{self, Signer};

const ISS: &str = "https://idp.example.com/";

/// A loopback HTTP server answering every request with `document` after
/// `delay`; counts the requests.
async fn server(document: String, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (seen, document) = (Arc::clone(&seen), document.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn unknown_kids_share_one_fetch_and_then_wait_out_the_gap() {
    let old = Signer::es256("old");
    let new = Signer::es256("new");
    let (url, fetches) = server(jwt::jwks(&[&new]), Duration::from_millis(200)).await;
    let transmitter =
        Transmitter::new(ISS, vec!["a".into()], jwt::jwks(&[&old]).as_bytes()).unwrap();
    let counters = FetchCounters::default();
    let refresh = Arc::new(KeyRefresh::new(
        transmitter.clone(),
        HttpsUrl::new(&url, None).unwrap(),
        Duration::from_secs(3600),
        counters.clone(),
    ));
    let waiting: Vec<_> = (0..10)
        .map(|_| {
            let refresh = Arc::clone(&refresh);
            tokio::spawn(async move { refresh.on_unknown_kid().await })
        })
        .collect();
    for w in waiting {
        assert!(w.await.unwrap(), "each one verifies again");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for all ten");
    assert_eq!(transmitter.key_count(), 1);
    // Within the gap: no fetch, counted as limited.
    assert!(!refresh.on_unknown_kid().await);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let count = |outcome| {
        counters
            .get_or_create(&FetchLabels {
                transmitter: ISS.into(),
                outcome,
            })
            .get()
    };
    assert_eq!((count("updated"), count("limited")), (1, 1));
}

#[test]
fn urls_are_https_or_loopback_http_without_credentials() {
    for ok in [
        "https://idp.example.com/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost/jwks",
    ] {
        assert!(HttpsUrl::new(ok, None).is_ok(), "{ok}");
    }
    for (bad, why) in [
        ("http://10.0.0.1/jwks", "only https://"),
        ("http://idp.example.com/jwks", "only https://"),
        ("https://user:pw@idp.example.com/jwks", "credentials"),
        ("file:///etc/jwks", "not"),
        ("idp.example.com/jwks", "is not a URL"),
    ] {
        let error = HttpsUrl::new(bad, None).unwrap_err().to_string();
        assert!(error.contains(why), "{bad}: {why} in {error}");
        assert!(!error.contains("pw@"), "{error}");
    }
    assert_eq!(
        HttpsUrl::new("https://idp.example.com/jwks?token=s3cret", None)
            .unwrap()
            .shown(),
        "https://idp.example.com/jwks"
    );
}
