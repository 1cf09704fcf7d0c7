//! The embedded rumqttd: its router thread, its listeners on loopback (reached only through
//! the front), and the daemon's own in-process link.
//!
//! research/mqtt.md gives the reasons for the shape: `Broker::start` blocks and cannot stop,
//! so the router is spawned and the listeners run as tasks on our runtime; `Config::default`
//! panics the router, so every setting is built here from the validated `[mqtt]` section.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

use rumqttd::alerts::AlertsLink;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};

use crate::auth::Authenticator;
use crate::config::MqttConfig;
use crate::store::Store;

/// Connections the daemon itself holds (its link) on top of clients.
const INTERNAL_LINKS: usize = 8;
/// QoS 0 messages per router read; also caps retained messages sent on a QoS 0 wildcard
/// subscription, which displays should not use anyway (they subscribe to exact topics).
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;
/// The broker's read-batch length (broker → client QoS 1 inflight is fixed inside rumqttd: 1,000
/// since vendor/rumqttd patch 6).
const MAX_INFLIGHT_COUNT: usize = 100;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No loopback port for the broker's internal listener.
    #[error("cannot reserve a loopback port for the broker: {0}")]
    Port(std::io::Error),
    /// The daemon's own link was refused (the router is not running).
    #[error("cannot open the daemon's link to the broker: {0}")]
    Link(String),
}

/// The running broker, as the daemon sees it.
pub(super) struct Embedded {
    /// The daemon's link: publishing half.
    pub(super) tx: LinkTx,
    /// The daemon's link: receiving half.
    pub(super) rx: LinkRx,
    /// The loopback address of the MQTT 3.1.1 listener.
    pub(super) v4: SocketAddr,
    /// The loopback address of the MQTT 5 listener, when one is configured.
    pub(super) v5: Option<SocketAddr>,
    /// The listener tasks; aborting them closes the listeners.
    pub(super) listeners: Vec<tokio::task::JoinHandle<()>>,
    /// The router's alerts (messages a subscriber lost by falling behind).
    pub(super) alerts: AlertsLink,
}

/// Starts the router, the loopback listeners and the daemon's link. Devices are checked again
/// by the broker (`auth`; the front already checked them, so the cache answers), so nothing
/// on the appliance can use the loopback port to skip authentication. `None` (demo mode)
/// lets anonymous connections through.
pub(super) fn start(
    config: &MqttConfig,
    v5: bool,
    auth: Option<(Store, Arc<Authenticator>)>,
) -> Result<Embedded, BrokerError> {
    let router = RouterConfig {
        max_connections: config.max_connections + INTERNAL_LINKS,
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: config.segment_bytes,
        max_segment_count: config.segment_count,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let router_tx = Router::new(0, router).spawn();
    let settings = |name: &str, listen: SocketAddr| {
        let mut settings = ServerSettings {
            name: name.into(),
            listen,
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                connection_timeout_ms: u16::try_from(config.connect_timeout_ms).unwrap_or(u16::MAX),
                max_payload_size: config.max_payload_bytes,
                max_inflight_count: MAX_INFLIGHT_COUNT,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        if let Some((store, authenticator)) = auth.clone() {
            settings.set_auth_handler(move |client_id: String, user: String, pass: String| {
                let (store, authenticator) = (store.clone(), authenticator.clone());
                async move {
                    user == client_id && authenticator.device(&store, &user, &pass).await.is_ok()
                }
            });
        }
        settings
    };
    let mut listeners = Vec::new();
    let v4_addr = loopback_port()?;
    let mut server = Server::new(settings("v4-internal", v4_addr), router_tx.clone(), V4);
    listeners.push(tokio::spawn(async move {
        if let Err(e) = server.start(LinkType::Remote).await {
            tracing::error!(error = %e, "the broker's MQTT 3.1.1 listener stopped");
        }
    }));
    let v5_addr = match v5 {
        true => {
            let addr = loopback_port()?;
            let mut server = Server::new(settings("v5-internal", addr), router_tx.clone(), V5);
            listeners.push(tokio::spawn(async move {
                if let Err(e) = server.start(LinkType::Remote).await {
                    tracing::error!(error = %e, "the broker's MQTT 5 listener stopped");
                }
            }));
            Some(addr)
        }
        false => None,
    };
    let alerts =
        AlertsLink::new(router_tx.clone()).map_err(|e| BrokerError::Link(e.to_string()))?;
    let (tx, rx, _connack) = LinkBuilder::new(super::DAEMON_CLIENT_ID, router_tx)
        .build()
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    Ok(Embedded {
        tx,
        rx,
        v4: v4_addr,
        v5: v5_addr,
        listeners,
        alerts,
    })
}

/// A free loopback port. rumqttd binds its own listener from an address, so the port is
/// found here and released; nothing else binds loopback ports on the appliance in between.
fn loopback_port() -> Result<SocketAddr, BrokerError> {
    let probe = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BrokerError::Port)?;
    probe.local_addr().map_err(BrokerError::Port)
}
