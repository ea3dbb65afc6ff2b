//! The webhook's HTTP client: hyper over rustls (ring, the provider the
//! rest of the process uses), HTTP/1.1, plain or TLS. Roots: the system's,
//! or only `webhook.ca_file` for a private PKI. Its own TLS configuration,
//! so nothing process-wide is installed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::sync::Arc;

pub use http::Uri;

pub type Client = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the client.
///
/// # Errors
/// An unreadable or empty `ca_file`, or no usable system roots.
pub fn client(ca_file: Option<&Path>) -> Result<Client, crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("webhook.ca_file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("webhook.ca_file {}: no certificate in it", path.display()).into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector))
}

/// Bytes of an answer's body read before it is dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// POSTs `body` as JSON with `headers`; the answer's status (its body is
/// read and dropped, so the connection can be reused). Not bounded here:
/// the caller bounds the whole exchange.
pub async fn post(client: &Client, url: &Uri, headers: &[(&str, &str)], body: Vec<u8>) -> Result<u16, String> {
    let mut request = http::Request::post(url.clone()).header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| format!("request: {e}"))?;
    let response = client.request(request).await.map_err(|e| format!("request failed: {e:?}"))?;
    let status = response.status().as_u16();
    // Read (and drop) at most this much of the answer: the status is all we need.
    let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
    Ok(status)
}
