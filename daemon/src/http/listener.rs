//! The HTTP listener, with a ceiling on open connections.
//!
//! Every phone is a socket, and a socket is a file descriptor. Past the process's open-file
//! limit `accept` fails with `EMFILE` and leaves the client hanging in the kernel's backlog,
//! while SQLite, the replica and journald need descriptors too. So the listener stops short
//! of the limit: a connection over the ceiling is accepted and closed at once (the client sees
//! a clean close and can retry elsewhere), counted in
//! `venued_http_connections_refused{reason="limit"}`, and logged at most once every
//! [`LOG_EVERY`].
//!
//! A connection is *unproven* until a request on it passes authentication (the admin token,
//! device credentials or an attendee token: [`Conn::prove`]). Unproven connections may not
//! hold the box: one without a request in flight is closed [`UNPROVEN_IDLE`] after it was
//! accepted or its last request ended (so a header dribbled a byte at a time, or a bare socket,
//! is gone within seconds), and together they may fill only the ceiling less a quarter kept for
//! proven ones. When they have filled it, a new connection closes the oldest idle unproven one
//! instead of being refused, so a flood of anonymous sockets cannot lock a kiosk out: the
//! kiosk's own new connection proves itself with its first request.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
/// How long an unproven connection may sit without a request in flight: after it was accepted
/// (a client sends its first request at once) or after its last request ended.
pub const UNPROVEN_IDLE: Duration = Duration::from_secs(10);

/// One accepted connection's standing, shared by its stream and the requests made on it.
pub struct Conn {
    accepted: Instant,
    /// A request on it passed authentication.
    proven: AtomicBool,
    /// Requests being handled now.
    active: AtomicUsize,
    /// When its last request ended, in ms after `accepted`.
    idle_since_ms: AtomicU64,
    /// Set when it is to be closed: its reads end.
    closing: AtomicBool,
    waker: futures::task::AtomicWaker,
    /// The listener's count of unproven connections, which this one is in (`in_share`) until
    /// it is proven, closing, or gone.
    unproven: Arc<AtomicUsize>,
    in_share: AtomicBool,
}

impl Conn {
    fn new(unproven: Arc<AtomicUsize>) -> Self {
        unproven.fetch_add(1, Ordering::Relaxed);
        Self {
            accepted: Instant::now(),
            proven: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            waker: futures::task::AtomicWaker::new(),
            unproven,
            in_share: AtomicBool::new(true),
        }
    }

    /// A request on this connection passed authentication: from now on it is not subject to
    /// the unproven idle deadline and is never evicted for a newcomer.
    pub fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
        self.leave_share();
    }

    fn leave_share(&self) {
        if self.in_share.swap(false, Ordering::Relaxed) {
            self.unproven.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether a request on it passed authentication.
    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Unproven and with no request in flight: what may be timed out or evicted.
    fn idle_unproven(&self) -> bool {
        !self.is_proven() && self.active.load(Ordering::Relaxed) == 0
    }

    /// When an idle unproven connection is closed.
    fn deadline(&self) -> Instant {
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        self.accepted + idle_since + UNPROVEN_IDLE
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.leave_share();
        self.waker.wake();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.leave_share();
    }
}

/// A request in flight on a [`Conn`]; its drop starts the idle clock again.
pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.0;
        let now = conn.accepted.elapsed().as_millis() as u64;
        conn.idle_since_ms.store(now, Ordering::Relaxed);
        conn.active.fetch_sub(1, Ordering::Relaxed);
        // The stream may be waiting on an old deadline: let it take the new one.
        conn.waker.wake();
    }
}

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
    /// Unproven connections now, and the most there may be.
    unproven: Arc<AtomicUsize>,
    unproven_limit: usize,
    /// Connections in accept order (proven and closed ones are pruned as they are met).
    queue: VecDeque<Weak<Conn>>,
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
            unproven: Arc::new(AtomicUsize::new(0)),
            // A quarter of the ceiling is kept for connections that proved themselves.
            unproven_limit: (ceiling - ceiling / 4).max(1),
            queue: VecDeque::new(),
            metrics,
            refused_since_log: 0,
            last_log: None,
        }
    }

    /// Makes room for one more unproven connection: when they are at their limit, the oldest
    /// idle one is closed. `false` when every unproven connection has a request in flight.
    fn room_for_unproven(&mut self) -> bool {
        if self.unproven.load(Ordering::Relaxed) < self.unproven_limit {
            return true;
        }
        // Proven and closed connections never become evictable again: drop them for good.
        let mut i = 0;
        while i < self.queue.len() {
            match self.queue[i].upgrade() {
                Some(conn) if !conn.is_proven() && !conn.closing.load(Ordering::Relaxed) => {
                    if conn.idle_unproven() {
                        conn.close();
                        self.queue.remove(i);
                        self.metrics.refuse("unproven_evicted");
                        return true;
                    }
                    i += 1;
                }
                _ => {
                    self.queue.remove(i);
                }
            }
        }
        false
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
                    if !self.room_for_unproven() {
                        drop(tcp);
                        let detail = format!(
                            "{} unauthenticated connections, each with a request in flight, fill their share of the ceiling",
                            self.unproven_limit
                        );
                        self.refused("unproven_limit", &detail);
                        continue;
                    }
                    // Acks, frames and small JSON answers go out at once, not after Nagle's
                    // wait for the peer's (possibly delayed) ACK.
                    let _ = tcp.set_nodelay(true);
                    self.open.fetch_add(1, Ordering::Relaxed);
                    self.metrics.open.inc();
                    let conn = Arc::new(Conn::new(self.unproven.clone()));
                    self.queue.push_back(Arc::downgrade(&conn));
                    return (
                        CountedStream {
                            tcp,
                            open: self.open.clone(),
                            metrics: self.metrics.clone(),
                            timer: Box::pin(tokio::time::sleep_until(conn.deadline().into())),
                            conn,
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

/// The peer's address and its connection's standing, as handlers see them through
/// `ConnectInfo<Peer>`.
#[derive(Clone)]
pub struct Peer(pub SocketAddr, pub Arc<Conn>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        Peer(*stream.remote_addr(), stream.io().conn.clone())
    }
}

fn is_out_of_files(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}

/// A connection that counts itself out of the listener's total when dropped, and ends its reads
/// when it is evicted or its unproven idle deadline passes.
pub struct CountedStream {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
    metrics: ConnectionMetrics,
    conn: Arc<Conn>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl CountedStream {
    /// Whether reads should end now: evicted, or idle and unproven past the deadline. Arms the
    /// timer (and the waker) otherwise.
    fn should_close(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.waker.register(cx.waker());
        if self.conn.closing.load(Ordering::Relaxed) {
            return true;
        }
        if !self.conn.idle_unproven() {
            return false;
        }
        let deadline = self.conn.deadline();
        if self.timer.deadline() != deadline.into() {
            self.timer.as_mut().reset(deadline.into());
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.metrics.refuse("unproven_idle");
            self.conn.close();
            return true;
        }
        false
    }
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
        if self.should_close(cx) {
            // End of stream: the server closes the connection as if the client had.
            return Poll::Ready(Ok(()));
        }
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

    /// Serves an accepted connection as a server would: reads until its stream ends.
    fn serve(stream: CountedStream) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stream = stream;
            let mut buf = [0u8; 64];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
    }

    /// Reads what the server sends until it closes; `true` once it did.
    async fn closed_by_server(client: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        matches!(client.read(&mut buf).await, Ok(0) | Err(_))
    }

    /// The outside probe: with the ceiling at 100, kiosks were refused while 100 bare sockets
    /// were held. Now a newcomer closes the oldest idle unproven connection instead; a proven
    /// one is never closed for it.
    #[tokio::test]
    async fn regression_a_newcomer_evicts_the_oldest_idle_unproven_connection() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let metrics = ConnectionMetrics::default();
        // Ceiling 8: unproven connections may fill 6.
        let mut listener = CappedListener::new(tcp, 8, metrics.clone());
        let mut clients = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..6 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await;
            conns.push(stream.conn.clone());
            serve(stream);
        }
        // The oldest has a request in flight: it may not be evicted. The second, idle and
        // unproven, goes for the newcomer (a kiosk, about to prove itself).
        let _busy = conns[0].request();
        let _kiosk = TcpStream::connect(addr).await.unwrap();
        let (newcomer, _) = listener.accept().await;
        let kiosk = newcomer.conn.clone();
        serve(newcomer);
        assert!(
            closed_by_server(&mut clients[1]).await,
            "the oldest idle unproven one"
        );
        let evicted = metrics
            .refused
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: "unproven_evicted".into(),
            })
            .get();
        assert_eq!(evicted, 1);
        assert!(!conns[0].closing.load(Ordering::Relaxed));
        // Proven connections are out of the unproven share altogether: the kiosk's proof makes
        // room, and the next newcomer evicts nobody.
        kiosk.prove();
        let _next = TcpStream::connect(addr).await.unwrap();
        let (next, _) = listener.accept().await;
        serve(next);
        assert!(
            conns[2..]
                .iter()
                .all(|c| !c.closing.load(Ordering::Relaxed))
        );
        assert!(!kiosk.closing.load(Ordering::Relaxed));
    }

    /// The outside probe: 1,000 idle sockets stayed open 45 s, and a header dribbled a byte
    /// every 5 s stayed open 150 s. An unproven connection without a request in flight is
    /// closed [`UNPROVEN_IDLE`] after it was accepted, whatever it trickles; a proven one stays.
    #[tokio::test(start_paused = true)]
    async fn regression_idle_or_dribbling_unproven_connections_are_closed() {
        use tokio::io::AsyncWriteExt;
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let metrics = ConnectionMetrics::default();
        let mut listener = CappedListener::new(tcp, 100, metrics.clone());
        let mut dribbler = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await;
        serve(stream);
        let mut proven = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await;
        stream.conn.prove();
        let proven_conn = stream.conn.clone();
        serve(stream);
        let started = tokio::time::Instant::now();
        let (mut from_server, mut to_server) = dribbler.split();
        let trickle = async {
            for byte in b"GET / HTTP/1.1\r\n" {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = to_server.write_all(&[*byte]).await;
            }
        };
        let closed = async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            matches!(from_server.read(&mut buf).await, Ok(0) | Err(_))
        };
        tokio::select! {
            () = trickle => panic!("the dribbled header was still being read after 75 s"),
            closed = closed => assert!(closed),
        }
        assert!(
            started.elapsed() <= UNPROVEN_IDLE + Duration::from_millis(100),
            "closed after {:?}",
            started.elapsed()
        );
        assert!(!proven_conn.closing.load(Ordering::Relaxed));
        proven.write_all(b"x").await.unwrap();
    }

    #[test]
    fn the_ceiling_leaves_room_below_the_file_limit() {
        let automatic = ceiling(0);
        assert!(automatic >= 16);
        assert_eq!(ceiling(10), 10.min(automatic));
        assert_eq!(ceiling(usize::MAX), automatic);
    }
}
