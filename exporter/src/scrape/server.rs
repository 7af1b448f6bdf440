//! The HTTP endpoint. It sees only the registry. Scrapers are not trusted:
//! bounded connections, a header timeout, small buffers, GET/HEAD only.
//! Collecting runs on blocking threads, a few at a time, never on the
//! runtime thread that drains the kernel's events.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::{net::TcpListener, sync::Semaphore};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 512;
/// Scrapes collected at once; more wait their turn.
const MAX_GATHERS: usize = 4;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) -> anyhow::Result<()> {
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
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, registry.clone(), gathers.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                // A client may shut its side down after sending the request
                // (as `nc -N` does): it still gets the answer. Without this,
                // hyper drops the connection when it reads that EOF before
                // the response is written, which happens under load.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("scrape connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// The exposition, collected on a blocking thread.
async fn exposition(registry: Arc<Registry>, gathers: Arc<Semaphore>) -> Result<Vec<u8>, String> {
    let _turn = gathers.acquire_owned().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let mut body = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&registry.gather(), &mut body)
            .map(|()| body)
            .map_err(|e| format!("encoding failed: {e}"))
    })
    .await
    .map_err(|e| format!("collecting failed: {e}"))?
}

async fn respond(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    gathers: Arc<Semaphore>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"only GET and HEAD\n".to_vec(),
        );
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match req.uri().path() {
        "/metrics" => match exposition(registry, gathers).await {
            Ok(body) => reply(StatusCode::OK, TextEncoder::new().format_type(), body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n").into_bytes()),
        },
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            b"<html><body><h1>gunicorn-ebpf-exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found: try /metrics\n".to_vec()),
    })
}
