//! The HTTP listener, with a ceiling on open connections.
//!
//! Every phone is a socket, and a socket is a file descriptor. Past the process's open-file
//! limit `accept` fails with `EMFILE` and leaves the client hanging in the kernel's backlog,
//! while SQLite, the replica and journald need descriptors too. So the listener stops short
//! of the limit: a connection over the ceiling is accepted and closed at once (the client sees
//! a clean close and can retry elsewhere), counted in
//! `venued_http_connections_refused{reason="limit"}`, and logged at most once every
//! [`LOG_EVERY`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::ConnectionMetrics;

/// Descriptors kept for everything that is not an HTTP connection (the database, its WAL,
/// MQTT clients' headroom, staged replica files, logs).
pub const RESERVED_DESCRIPTORS: usize = 512;
/// Refusals are logged at most this often (with the count since the last line).
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after `EMFILE`/`ENFILE`, so a full table does not spin the accept loop.
const PAUSE_WHEN_OUT_OF_FILES: Duration = Duration::from_millis(50);

/// The ceiling for `configured` (0 = automatic): the open-file limit less
/// [`RESERVED_DESCRIPTORS`], never above it.
pub fn ceiling(configured: usize) -> usize {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(1024);
    let automatic = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
    match configured {
        0 => automatic,
        n => n.min(automatic),
    }
}

/// A TCP listener that keeps at most `ceiling` connections open.
pub struct CappedListener {
    inner: TcpListener,
    open: Arc<AtomicUsize>,
    ceiling: usize,
    metrics: ConnectionMetrics,
    refused_since_log: u64,
    last_log: Option<Instant>,
}

impl CappedListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener, ceiling: usize, metrics: ConnectionMetrics) -> Self {
        Self {
            inner,
            open: Arc::new(AtomicUsize::new(0)),
            ceiling,
            metrics,
            refused_since_log: 0,
            last_log: None,
        }
    }

    fn refused(&mut self, reason: &'static str, detail: &str) {
        self.metrics.refuse(reason);
        self.refused_since_log += 1;
        if self.last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                reason,
                refused = self.refused_since_log,
                open = self.open.load(Ordering::Relaxed),
                ceiling = self.ceiling,
                "refusing new connections: {detail}"
            );
            self.refused_since_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    if self.open.load(Ordering::Relaxed) >= self.ceiling {
                        drop(tcp);
                        let detail = format!(
                            "{} connections are open, the ceiling (http.max_connections, or the open-file limit less {RESERVED_DESCRIPTORS}); raise LimitNOFILE= or add an appliance",
                            self.ceiling
                        );
                        self.refused("limit", &detail);
                        continue;
                    }
                    // Acks, frames and small JSON answers go out at once, not after Nagle's
                    // wait for the peer's (possibly delayed) ACK.
                    let _ = tcp.set_nodelay(true);
                    self.open.fetch_add(1, Ordering::Relaxed);
                    self.metrics.open.inc();
                    return (
                        CountedStream {
                            tcp,
                            open: self.open.clone(),
                            metrics: self.metrics.clone(),
                        },
                        addr,
                    );
                }
                Err(e) if e.raw_os_error().is_some_and(is_out_of_files) => {
                    self.refused(
                        "no_file_descriptors",
                        &format!(
                            "accept failed: {e}; raise LimitNOFILE= or lower http.max_connections"
                        ),
                    );
                    tokio::time::sleep(PAUSE_WHEN_OUT_OF_FILES).await;
                }
                // The peer gave up between SYN and accept (ECONNABORTED and friends).
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer's address, as handlers see it through `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

fn is_out_of_files(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}

/// A connection that counts itself out of the listener's total when dropped.
pub struct CountedStream {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
    metrics: ConnectionMetrics,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.open.dec();
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    /// Past the ceiling a connection is closed at once and counted; one closing frees a place.
    #[tokio::test]
    async fn connections_past_the_ceiling_are_closed_and_counted() {
        use tokio::io::AsyncReadExt;
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let metrics = ConnectionMetrics::default();
        let mut listener = CappedListener::new(tcp, 2, metrics.clone());
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            accepted.push(listener.accept().await.0);
        }
        assert_eq!(metrics.open.get(), 2);
        // The third is accepted and dropped inside accept(), which then waits for a fourth.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let pending = tokio::spawn(async move {
            let got = listener.accept().await;
            (listener, got)
        });
        let mut buf = [0u8; 1];
        assert_eq!(
            third.read(&mut buf).await.unwrap(),
            0,
            "closed by the server"
        );
        let refused = metrics
            .refused
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: "limit".into(),
            })
            .get();
        assert_eq!(refused, 1);
        drop(accepted.pop());
        assert_eq!(metrics.open.get(), 1);
        let _fourth = TcpStream::connect(addr).await.unwrap();
        let (_listener, (_io, _)) = pending.await.unwrap();
        assert_eq!(metrics.open.get(), 2);
    }

    #[test]
    fn the_ceiling_leaves_room_below_the_file_limit() {
        let automatic = ceiling(0);
        assert!(automatic >= 16);
        assert_eq!(ceiling(10), 10.min(automatic));
        assert_eq!(ceiling(usize::MAX), automatic);
    }
}
