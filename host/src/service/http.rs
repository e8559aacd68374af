//! The metrics endpoint: `GET /metrics` over HTTP/1 (hyper) on a loopback address.
//!
//! Loopback only: the metrics describe which code this node validates and how fast; exposing
//! them further is a decision for a reverse proxy the operator configures, not for this host.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ValidationService;

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl MetricsServer {
    /// The address it listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL to scrape: `http://ADDR/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.local_addr)
    }

    /// Stops accepting connections (also done on drop).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) async fn serve(
    service: ValidationService,
    addr: SocketAddr,
) -> std::io::Result<MetricsServer> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("metrics address {addr} is not a loopback address (use 127.0.0.1 or [::1])"),
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        continue;
                    }
                },
            };
            let service = service.clone();
            tokio::spawn(async move {
                let handler = service_fn(move |request| respond(service.clone(), request));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await
                {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
            });
        }
    });
    tracing::info!(url = %format!("http://{local_addr}/metrics"), "serving metrics");
    Ok(MetricsServer { local_addr, stop })
}

async fn respond(
    service: ValidationService,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(CONTENT_TYPE, OPENMETRICS)
            .body(Full::new(Bytes::from(service.metrics_text().await))),
        (_, "/metrics") => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::new(Bytes::from_static(b"only GET\n"))),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found; metrics are at /metrics\n",
            ))),
    };
    // The builder only fails on invalid header values, and ours are constants.
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
