//! The front: the daemon's own MQTT listeners (TCP, TLS, WebSocket). Each connection is
//! authenticated here, then relayed to the broker on loopback while every packet the client
//! sends is framed and checked.
//!
//! Why a front at all: rumqttd never tells a subscriber who published a message and has no
//! ACL, so "the id in a device topic must be the authenticated client id" can only be enforced
//! where the connection's identity and its packets meet. Doing it here also gives refused
//! logins a real CONNACK code (rumqttd just drops them), a per-address failure budget shared
//! with the HTTP API, ports chosen by the OS in tests, and TLS and WebSocket without rumqttd's
//! inline handshakes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::packet::{self, Connect, Kind, PacketError, Refusal};
use super::topics::{Denied, Tree};
use crate::auth::{AuthError, Authenticator};
use crate::config::is_valid_id;
use crate::domain::devices::DeviceKind;
use crate::metrics::{MqttMetrics, WhyLabel};
use crate::store::Store;

/// How long the front tries to reach the broker's loopback listener (it starts with the
/// daemon, so only the first connections after start can race it).
const BROKER_CONNECT_ATTEMPTS: u32 = 50;
const BROKER_CONNECT_BACKOFF_MS: u64 = 20;
/// Bytes a connection reads at once while it is quiet: most kiosks and displays send and get a
/// few small packets a minute, and hundreds of them stay connected all day.
const READ_MIN: usize = 1024;
/// ...up to this many once reads keep filling the room they were given (a busy gateway).
const READ_MAX: usize = 16 * 1024;
/// Buffer of the in-memory pipe between a WebSocket and the relay.
const WS_PIPE_BYTES: usize = 64 * 1024;
/// At shutdown, a connection closes once the broker has sent it nothing for this long...
const SHUTDOWN_DRAIN_IDLE: Duration = Duration::from_millis(100);
/// ...or after this long at most.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this many milliseconds about refused clients; the rest are counted.
const LOG_INTERVAL_MS: u64 = 1000;
/// When a client's side ends, how long the front waits for the broker to close its side after
/// reading everything the client sent.
const BROKER_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How much one direction of a connection reads at once: [`READ_MIN`], doubled each time a read
/// fills all the room it was offered, up to [`READ_MAX`]. It never shrinks: a connection that
/// was busy once is likely to be busy again.
struct ReadSize(usize);

impl ReadSize {
    fn new() -> Self {
        Self(READ_MIN)
    }

    fn get(&self) -> usize {
        self.0
    }

    /// Notes a read of `n` bytes into `room` bytes of space.
    fn read(&mut self, n: usize, room: usize) {
        if n >= room {
            self.0 = (self.0 * 2).min(READ_MAX);
        }
    }
}

/// What every connection needs; shared by all listeners.
pub struct Front {
    /// The event's topic tree.
    pub tree: Arc<Tree>,
    /// For device credential lookups.
    pub store: Store,
    /// Device credentials and the per-address failure budget.
    pub auth: Arc<Authenticator>,
    /// Counters.
    pub metrics: MqttMetrics,
    /// Largest packet accepted.
    pub max_packet: usize,
    /// Time a client has to send CONNECT (and finish a TLS handshake).
    pub connect_timeout: Duration,
    /// Demo mode: connections without credentials may subscribe (never publish).
    pub anonymous: bool,
    /// The broker's MQTT 3.1.1 loopback listener.
    pub broker_v4: SocketAddr,
    /// The broker's MQTT 5 loopback listener.
    pub broker_v5: Option<SocketAddr>,
    /// One permit per client connection (`mqtt.max_connections`).
    pub slots: Arc<Semaphore>,
    /// Shutdown: listeners stop accepting and connections close.
    pub stop: watch::Receiver<bool>,
    sessions: Arc<Sessions>,
    /// One refusal warning per second at most.
    warnings: super::log_limit::LogLimit,
    /// The time this process was not running (see [`super::keepalive`]).
    stall: Arc<std::sync::Mutex<super::keepalive::StallClock>>,
}

/// A stall clock and the task that ticks it (ending with the last front holding the clock).
fn start_stall_clock() -> Arc<std::sync::Mutex<super::keepalive::StallClock>> {
    let clock = Arc::new(std::sync::Mutex::new(super::keepalive::StallClock::new(
        std::time::Instant::now(),
    )));
    let weak = Arc::downgrade(&clock);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(super::keepalive::TICK);
        loop {
            every.tick().await;
            let Some(clock) = weak.upgrade() else { return };
            clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .tick(std::time::Instant::now());
        }
    });
    clock
}

/// The open device connections, so a revoked device can be cut off at once.
#[derive(Default)]
pub struct Sessions {
    open: std::sync::Mutex<std::collections::HashMap<String, Vec<Arc<Notify>>>>,
}

impl Sessions {
    fn open(&self, id: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(id.to_string())
            .or_default()
            .push(notify.clone());
        notify
    }

    fn closed(&self, id: &str, notify: &Arc<Notify>) {
        let mut open = self.lock();
        if let Some(list) = open.get_mut(id) {
            list.retain(|n| !Arc::ptr_eq(n, notify));
            if list.is_empty() {
                open.remove(id);
            }
        }
    }

    /// Closes every connection of device `id`.
    pub fn close(&self, id: &str) {
        if let Some(list) = self.lock().remove(id) {
            for notify in list {
                notify.notify_one();
            }
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<Arc<Notify>>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Front {
    /// A front for these settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tree: Arc<Tree>,
        store: Store,
        auth: Arc<Authenticator>,
        metrics: MqttMetrics,
        config: &crate::config::MqttConfig,
        anonymous: bool,
        broker: (SocketAddr, Option<SocketAddr>),
        stop: watch::Receiver<bool>,
        sessions: Arc<Sessions>,
    ) -> Self {
        Self {
            tree,
            store,
            auth,
            metrics,
            max_packet: config.max_payload_bytes,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            anonymous,
            broker_v4: broker.0,
            broker_v5: broker.1,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            stop,
            sessions,
            warnings: super::log_limit::LogLimit::new(LOG_INTERVAL_MS),
            stall: start_stall_clock(),
        }
    }

    /// The time this process was not running, up to now.
    fn stalled(&self) -> Duration {
        self.stall
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stalled(std::time::Instant::now())
    }

    /// Logs a refusal unless one was logged in the last second (they are all counted).
    fn warn(&self, peer: IpAddr, client: &str, what: &str, reason: &str) {
        if self.warnings.allow(crate::store::now_ms()) {
            tracing::warn!(%peer, client, reason, "MQTT {what} refused (further refusals within 1 s are only counted in /metrics)");
        }
    }

    fn refused(&self, reason: &'static str) {
        self.metrics
            .refused
            .get_or_create(&WhyLabel { reason })
            .inc();
    }
}

/// Accepts MQTT connections (`level` 4 or 5) on `listener`, over TLS when `tls` is set, until
/// shutdown.
pub async fn serve_tcp(
    front: Arc<Front>,
    listener: TcpListener,
    level: u8,
    tls: Option<TlsAcceptor>,
) {
    let mut stop = front.stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        // A task per kind of stream: a task's future is as large as its largest state, so a
        // plain connection must not carry room for a TLS session it never has.
        match tls.clone() {
            None => {
                tokio::spawn(relay(front, stream, peer.ip(), level));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(front.connect_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => relay(front, stream, peer.ip(), level).await,
                        Ok(Err(e)) => {
                            front.refused("tls_handshake");
                            front.warn(peer.ip(), "", "TLS handshake", &e.to_string());
                        }
                        Err(_) => front.refused("connect_timeout"),
                    }
                });
            }
        }
    }
}

/// Serves MQTT 3.1.1 over WebSocket (subprotocol `mqtt`, any path) on `listener`.
pub async fn serve_ws(front: Arc<Front>, listener: TcpListener) {
    let mut stop = front.stop.clone();
    let app = axum::Router::new()
        .fallback(axum::routing::any(ws_upgrade))
        .with_state(front.clone());
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    })
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the MQTT WebSocket listener stopped");
    }
}

async fn ws_upgrade(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.protocols(["mqtt"])
        .max_message_size(front.max_packet + 8)
        .on_upgrade(move |socket| async move {
            let (ours, theirs) = tokio::io::duplex(WS_PIPE_BYTES);
            tokio::spawn(pipe_websocket(socket, theirs));
            relay(front, ours, peer.ip(), packet::LEVEL_V4).await;
        })
}

/// Moves bytes between a WebSocket's binary messages and one end of an in-memory pipe, so the
/// relay treats WebSocket clients like TCP ones. MQTT packets may span messages or share one.
async fn pipe_websocket(socket: WebSocket, pipe: tokio::io::DuplexStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut pipe_rx, mut pipe_tx) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(bytes) => {
                    if pipe_tx.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                // MQTT over WebSocket is binary only (MQTT 3.1.1 §6); pings are answered by axum.
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        let _ = pipe_tx.shutdown().await;
    };
    let outbound = async {
        let mut size = ReadSize::new();
        let mut buf = vec![0u8; size.get()];
        loop {
            match pipe_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    size.read(n, buf.len());
                    buf.resize(size.get(), 0);
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

/// Why a connection's packets were refused after CONNECT.
enum Refused {
    Denied(Denied),
    Malformed(PacketError),
}

/// Handles one client connection: CONNECT, authentication, then the checked relay.
async fn relay<S>(front: Arc<Front>, mut client: S, peer: IpAddr, level: u8)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(_slot) = front.slots.clone().try_acquire_owned() else {
        front.refused("max_connections");
        front.warn(peer, "", "connection", "mqtt.max_connections reached");
        let _ = client
            .write_all(&packet::connack_refusal(level, Refusal::Unavailable))
            .await;
        return;
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_MIN);
    let first = tokio::time::timeout(
        front.connect_timeout,
        read_packet(&mut client, &mut buf, front.max_packet),
    )
    .await;
    let len = match first {
        Ok(Ok(Some(len))) => len,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            front.refused("malformed");
            front.warn(peer, "", "connection", &e.to_string());
            return;
        }
        Err(_) => {
            front.refused("connect_timeout");
            return;
        }
    };
    let connect = match packet::parse_connect(&buf[..len]) {
        Ok(connect) => connect,
        Err(e) => {
            front.refused("malformed");
            front.warn(peer, "", "connection", &e.to_string());
            if let PacketError::Protocol { .. } = e {
                // Level 3 (MQTT 3.1) or the other version on this port: say so, in the
                // client's own version where we can.
                let _ = client.write_all(&[0x20, 2, 0, 1]).await;
            }
            return;
        }
    };
    if connect.level != level {
        front.refused("wrong_protocol_port");
        front.warn(
            peer,
            connect.client_id,
            "connection",
            "MQTT version not spoken on this port",
        );
        let code: &[u8] = match connect.level {
            packet::LEVEL_V5 => &[0x20, 3, 0, 0x84, 0],
            _ => &[0x20, 2, 0, 1],
        };
        let _ = client.write_all(code).await;
        return;
    }
    let device = match authenticate(&front, &connect, peer).await {
        Ok(device) => device,
        Err((refusal, reason)) => {
            front.refused(reason);
            front.warn(peer, connect.client_id, "login", reason);
            let _ = client
                .write_all(&packet::connack_refusal(level, refusal))
                .await;
            return;
        }
    };
    let identity = device.map(|kind| (kind, connect.client_id.to_string()));
    if let Some(topic) = connect.will_topic {
        let who = identity.as_ref().map(|(k, id)| (*k, id.as_str()));
        if let Err(denied) = front.tree.may_publish(who, topic, connect.will_qos) {
            front
                .metrics
                .rejected
                .get_or_create(&WhyLabel {
                    reason: denied.as_str(),
                })
                .inc();
            front.warn(peer, connect.client_id, "will", denied.as_str());
            let _ = client
                .write_all(&packet::connack_refusal(level, Refusal::NotAuthorized))
                .await;
            return;
        }
    }
    let client_id = connect.client_id.to_string();
    let keep_alive = connect.keep_alive;
    // The front times clients out itself, with stalls of this process taken out; rumqttd is told
    // a keep-alive it never reaches.
    if packet::set_keep_alive(&mut buf[..len], super::keepalive::BROKER_KEEP_ALIVE_SECS).is_err() {
        front.refused("malformed");
        return;
    }
    let broker_addr = match level {
        packet::LEVEL_V5 => front.broker_v5.unwrap_or(front.broker_v4),
        _ => front.broker_v4,
    };
    let Some(mut broker) = connect_broker(broker_addr).await else {
        front.refused("broker_unreachable");
        let _ = client
            .write_all(&packet::connack_refusal(level, Refusal::Unavailable))
            .await;
        return;
    };
    if broker.write_all(&buf[..len]).await.is_err() {
        return;
    }
    buf.drain(..len);
    front.metrics.connections.inc();
    let kill = front.sessions.open(&client_id);
    let reason = pump(
        &front, client, broker, buf, level, identity, keep_alive, &kill,
    )
    .await;
    front.sessions.closed(&client_id, &kill);
    front.metrics.connections.dec();
    front.metrics.connections_closed.inc();
    if let Some(refused) = reason {
        let reason = match &refused {
            Refused::Denied(d) => {
                front
                    .metrics
                    .rejected
                    .get_or_create(&WhyLabel { reason: d.as_str() })
                    .inc();
                d.as_str().to_string()
            }
            Refused::Malformed(e) => {
                front.refused("malformed");
                e.to_string()
            }
        };
        front.warn(peer, &client_id, "packet", &reason);
    }
}

/// Checks the CONNECT's identity: `Some(kind)` for a device, `None` for an anonymous demo
/// client, or the CONNACK refusal and the metric reason.
async fn authenticate(
    front: &Front,
    connect: &Connect<'_>,
    peer: IpAddr,
) -> Result<Option<DeviceKind>, (Refusal, &'static str)> {
    if !is_valid_id(connect.client_id) {
        return Err((Refusal::BadClientId, "bad_client_id"));
    }
    if connect.keep_alive == 0 {
        // The broker refuses it too (it could never notice a dead kiosk); the topic reference
        // asks for 15-60 s.
        return Err((Refusal::BadClientId, "keep_alive_zero"));
    }
    let (user, pass) = match (connect.username, connect.password) {
        (None, None) if front.anonymous => return Ok(None),
        (Some(user), Some(pass)) => (user, pass),
        _ => return Err((Refusal::NotAuthorized, "no_credentials")),
    };
    if front.auth.failures.check(peer).is_err() {
        return Err((Refusal::Unavailable, "failure_budget"));
    }
    let fail = |reason| {
        front.auth.failures.failed(peer);
        front.metrics.auth_failures.inc();
        Err((Refusal::BadCredentials, reason))
    };
    if user != connect.client_id {
        return fail("username_not_client_id");
    }
    let Ok(pass) = std::str::from_utf8(pass) else {
        return fail("bad_credentials");
    };
    match front.auth.device(&front.store, user, pass).await {
        Ok(kind) => Ok(Some(kind)),
        Err(AuthError::Denied) => fail("bad_credentials"),
        Err(AuthError::Domain(e)) => {
            tracing::error!(error = %e, "cannot check MQTT credentials");
            Err((Refusal::Unavailable, "store_error"))
        }
    }
}

/// Relays until either side closes, a packet is refused, or shutdown. Returns why it stopped
/// when a packet was refused.
#[allow(clippy::too_many_arguments)]
async fn pump<S>(
    front: &Front,
    client: S,
    broker: TcpStream,
    mut buf: Vec<u8>,
    level: u8,
    identity: Option<(DeviceKind, String)>,
    keep_alive_secs: u16,
    kill: &Notify,
) -> Option<Refused>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let who = identity.as_ref().map(|(kind, id)| (*kind, id.as_str()));
    let mut stop = front.stop.clone();
    // Broker → client. At shutdown it keeps going until the broker has been quiet for a moment
    // (bounded), so the final retained `daemon/status` offline reaches every subscriber.
    let downstream = async {
        let mut size = ReadSize::new();
        let mut chunk = vec![0u8; size.get()];
        let mut drain_until = None;
        loop {
            let read = match drain_until {
                Some(until) => {
                    let idle = tokio::time::Instant::now() + SHUTDOWN_DRAIN_IDLE;
                    match tokio::time::timeout_at(idle.min(until), broker_rx.read(&mut chunk)).await
                    {
                        Ok(read) => read,
                        Err(_) => return,
                    }
                }
                None => tokio::select! {
                    read = broker_rx.read(&mut chunk) => read,
                    _ = stop.changed() => {
                        drain_until = Some(tokio::time::Instant::now() + SHUTDOWN_DRAIN_MAX);
                        continue;
                    }
                },
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // rumqttd leaves Nagle on for its sockets, so a small publish that follows
                    // an unacknowledged one (a check-in's result after its PUBACK) waits for our
                    // ACK; Linux would delay that ACK by up to 40 ms. Acknowledge at once.
                    let _ = socket2::SockRef::from(broker_rx.as_ref()).set_tcp_quickack(true);
                    if client_tx.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    size.read(n, chunk.len());
                    chunk.resize(size.get(), 0);
                }
            }
        }
    };
    let upstream = async {
        let mut size = ReadSize::new();
        let mut keep_alive = super::keepalive::KeepAlive::new(
            keep_alive_secs,
            std::time::Instant::now(),
            front.stalled(),
        );
        loop {
            // Forward every whole packet in the buffer, checked, in one write.
            let mut checked = 0;
            while let Some(len) =
                packet::frame_len(&buf[checked..], front.max_packet).map_err(Refused::Malformed)?
            {
                check(front, &buf[checked..checked + len], level, who)?;
                checked += len;
            }
            if checked > 0 {
                if broker_tx.write_all(&buf[..checked]).await.is_err() {
                    return Ok(());
                }
                buf.drain(..checked);
            }
            buf.reserve(size.get());
            let room = buf.capacity() - buf.len();
            let deadline = keep_alive.deadline(front.stalled());
            // `read_buf` is cancel-safe: a read the deadline cuts short has taken nothing.
            match tokio::time::timeout_at(deadline.into(), client_rx.read_buf(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return Ok(()),
                Ok(Ok(n)) => {
                    size.read(n, room);
                    keep_alive.heard(std::time::Instant::now(), front.stalled());
                }
                // Past the deadline as it was: look again with the stall time known now.
                Err(_) if keep_alive.deadline(front.stalled()) > std::time::Instant::now() => {}
                Err(_) => {
                    // Gone: closing the broker side makes rumqttd publish the client's will.
                    front.metrics.keep_alive_expired.inc();
                    return Ok(());
                }
            }
        }
    };
    let outcome = tokio::select! {
        result = upstream => result.err(),
        () = downstream => None,
        () = kill.notified() => None,
    };
    // End the broker's stream instead of resetting it, and wait (bounded) until the broker has
    // read all the client sent and closed its side: a client's DISCONNECT is then always seen
    // as one, and a connection counts as closed only once the broker is done with it.
    let _ = broker_tx.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(BROKER_CLOSE_WAIT, async {
        while matches!(broker_rx.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    outcome
}

/// Checks one packet a client sent after CONNECT.
fn check(
    front: &Front,
    packet: &[u8],
    level: u8,
    who: Option<(DeviceKind, &str)>,
) -> Result<(), Refused> {
    match packet::kind(packet) {
        Kind::Publish => {
            let publish = packet::parse_publish(packet, level).map_err(Refused::Malformed)?;
            if publish.topic_alias || publish.topic.is_empty() {
                // An alias hides the topic from this check; the topic reference says not to
                // use them.
                return Err(Refused::Denied(Denied::UnknownTopic));
            }
            front
                .tree
                .may_publish(who, publish.topic, publish.qos)
                .map_err(Refused::Denied)?;
            front.metrics.publishes_in.inc();
        }
        Kind::Subscribe => {
            for filter in packet::parse_subscribe(packet, level).map_err(Refused::Malformed)? {
                front
                    .tree
                    .may_subscribe(who, filter)
                    .map_err(Refused::Denied)?;
            }
        }
        Kind::Connect => return Err(Refused::Malformed(PacketError::NotConnect)),
        Kind::Other => {}
    }
    Ok(())
}

/// Reads until `buf` holds the whole CONNECT packet; its length, or `None` at a clean EOF.
async fn read_packet<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<usize>, PacketError> {
    loop {
        // The first packet must be CONNECT: anything else is refused at its first byte,
        // instead of waiting out the timeout for a length that means nothing.
        if !buf.is_empty() && packet::kind(buf) != Kind::Connect {
            return Err(PacketError::NotConnect);
        }
        if let Some(len) = packet::frame_len(buf, max)? {
            return Ok(Some(len));
        }
        buf.reserve(READ_MIN);
        match client.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn connect_broker(addr: SocketAddr) -> Option<TcpStream> {
    for _ in 0..BROKER_CONNECT_ATTEMPTS {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
        tokio::time::sleep(Duration::from_millis(BROKER_CONNECT_BACKOFF_MS)).await;
    }
    tracing::error!(%addr, "the broker's loopback listener does not answer");
    None
}

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate file is not a PEM chain, or holds none.
    #[error("{path} is not a PEM certificate chain ({reason}); give the full chain, leaf first")]
    BadCertificate {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// The key file holds no usable key.
    #[error("{path} holds no PKCS#8, RSA or SEC1 private key in PEM ({reason})")]
    BadKey {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// The certificate and key do not make an identity (mismatch, unsupported algorithm).
    #[error("{cert} and {key} do not make a usable TLS identity: {reason}")]
    Identity {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// A TLS acceptor for the PEM certificate chain and key at these paths.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| TlsError::Unreadable {
            path: path.into(),
            source,
        })
    };
    let config = tls_server_config(&read(cert)?, &read(key)?).map_err(|e| match e {
        PemProblem::Certificate(reason) => TlsError::BadCertificate {
            path: cert.into(),
            reason,
        },
        PemProblem::Key(reason) => TlsError::BadKey {
            path: key.into(),
            reason,
        },
        PemProblem::Identity(reason) => TlsError::Identity {
            cert: cert.into(),
            key: key.into(),
            reason,
        },
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What is wrong with a PEM certificate chain and key, as [`tls_server_config`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemProblem {
    /// The chain is not PEM certificates, or holds none.
    Certificate(String),
    /// No PKCS#8, RSA or SEC1 private key.
    Key(String),
    /// They do not make an identity (the key is not the certificate's, or an unsupported
    /// algorithm).
    Identity(String),
}

/// A TLS server configuration from a PEM certificate chain (leaf first) and its private key.
/// `venued provision` checks a provisioning file's certificate with it, so a box is never
/// provisioned with one its MQTT listener would refuse.
pub fn tls_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tokio_rustls::rustls::ServerConfig, PemProblem> {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemProblem::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemProblem::Certificate("no certificate in it".into()));
    }
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| PemProblem::Key(e.to_string()))?
        .ok_or_else(|| PemProblem::Key("no key in it".into()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PemProblem::Identity(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| PemProblem::Identity(e.to_string()))
}
