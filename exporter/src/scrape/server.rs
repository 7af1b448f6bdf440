//! The HTTP endpoint. It sees only the registry and the web configuration
//! (TLS, basic auth). Scrapers are not trusted: bounded connections, a
//! handshake and a header timeout, small buffers, GET/HEAD only. Collecting
//! (and bcrypt) runs on blocking threads, a few at a time, never on the
//! runtime thread that drains the kernel's events.

use std::{convert::Infallible, future::Future, io, pin::Pin, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig, server::TlsStream};

use super::web_config::WebConfig;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 512;
/// Scrapes collected at once; more wait their turn.
const MAX_GATHERS: usize = 4;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What /metrics serves: a body in the text format, or why there is none.
pub type Rendered = Pin<Box<dyn Future<Output = Result<Vec<u8>, NoExposition>> + Send>>;

/// Why /metrics has no body.
#[derive(Debug, thiserror::Error)]
pub enum NoExposition {
    /// The exporter failed to render it (500).
    #[error("{0}")]
    Failed(String),
    /// What it is rendered from cannot be read now, e.g. the aggregate's
    /// Redis (503: try again later).
    #[error("{0}")]
    Unavailable(String),
}

impl From<String> for NoExposition {
    fn from(reason: String) -> NoExposition {
        NoExposition::Failed(reason)
    }
}

/// Where the exposition comes from: the exporter's registry, or the
/// aggregate's merge of what Redis holds.
pub trait Source: Send + Sync + 'static {
    fn render(self: Arc<Self>) -> Rendered;
}

/// The registry is collected on a blocking thread.
impl Source for Registry {
    fn render(self: Arc<Self>) -> Rendered {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || encode(&self))
                .await
                .map_err(|e| format!("collecting failed: {e}"))?
                .map_err(NoExposition::Failed)
        })
    }
}

/// The registry's exposition (what /metrics serves, and what Redis stores).
pub fn encode(registry: &Registry) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(&registry.gather(), &mut body)
        .map(|()| body)
        .map_err(|e| format!("encoding failed: {e}"))
}

/// Serves /metrics; `web`, if given, says whether over TLS and with which
/// users (looked at again for each connection and request).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<dyn Source>,
    web: Option<Arc<WebConfig>>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let gathers = Arc::new(Semaphore::new(MAX_GATHERS));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: keep serving once descriptors free up.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let gathers = gathers.clone();
        let web = web.clone();
        tokio::spawn(async move {
            let tls = match &web {
                Some(web) => web.settings().await.tls.clone(),
                None => None,
            };
            let service =
                service_fn(move |req| respond(req, registry.clone(), gathers.clone(), web.clone()));
            let served = match tls {
                None => {
                    http1()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => match handshake(stream, tls).await {
                    Ok(stream) => {
                        http1()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => {
                        log::debug!("TLS handshake with a scraper failed: {e}");
                        Ok(())
                    }
                },
            };
            if let Err(e) = served {
                log::debug!("scrape connection ended: {e}");
            }
            drop(permit);
        });
    }
}

fn http1() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        // A client may shut its side down after sending the request
        // (as `nc -N` does): it still gets the answer. Without this,
        // hyper drops the connection when it reads that EOF before
        // the response is written, which happens under load.
        .half_close(true);
    builder
}

/// The TLS handshake, in bounded time. A plain HTTP request on the TLS port
/// gets a plain answer saying so (as Go's servers give), not an alert that
/// the scraper shows as gibberish.
async fn handshake(
    mut stream: TcpStream,
    tls: Arc<ServerConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            // Read what came, so closing does not reset the connection
            // before the answer is read.
            let _ = stream.try_read(&mut [0u8; 4096]);
            stream.write_all(plain_http_answer().as_bytes()).await?;
            stream.shutdown().await?;
            return Err(io::Error::other("plain HTTP on the TLS port"));
        }
        TlsAcceptor::from(tls).accept(stream).await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))?
}

/// What a plain HTTP request on the TLS port is answered.
fn plain_http_answer() -> String {
    let body = "this endpoint serves HTTPS: scrape https://, not http://\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The exposition, a few at a time.
async fn exposition(
    source: Arc<dyn Source>,
    gathers: Arc<Semaphore>,
) -> Result<Vec<u8>, NoExposition> {
    let _turn = gathers.acquire_owned().await.map_err(|e| e.to_string())?;
    source.render().await
}

async fn respond(
    req: Request<Incoming>,
    registry: Arc<dyn Source>,
    gathers: Arc<Semaphore>,
    web: Option<Arc<WebConfig>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    };
    if let Some(web) = web
        && !web.admits(req.headers().get(AUTHORIZATION)).await
    {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            b"401 unauthorized: basic auth with a user of the web configuration\n".to_vec(),
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gunicorn-ebpf-exporter\", charset=\"UTF-8\""),
        );
        return Ok(response);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"only GET and HEAD\n".to_vec(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match req.uri().path() {
        METRICS_PATH => match exposition(registry, gathers).await {
            Ok(body) => reply(StatusCode::OK, TextEncoder::new().format_type(), body),
            Err(e) => {
                let status = match e {
                    NoExposition::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    NoExposition::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                reply(status, "text/plain", format!("{e}\n").into_bytes())
            }
        },
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            b"<html><body><h1>gunicorn-ebpf-exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found: try /metrics\n".to_vec()),
    })
}
