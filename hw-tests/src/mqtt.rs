//! A real MQTT client (rumqttc) for the tests, with its event loop driven in a task and the
//! messages it receives delivered to the test as they arrive.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// What the client's event loop reports.
#[derive(Debug)]
pub enum Received {
    /// A message: topic, payload, retain flag.
    Message(String, Vec<u8>, bool),
    /// The connection ended (with the reason).
    Closed(String),
}

/// A connected client.
pub struct Client {
    /// The rumqttc handle (publish, subscribe, disconnect).
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Received>,
    driver: tokio::task::JoinHandle<()>,
}

/// How to connect.
pub struct Options<'a> {
    /// Client id.
    pub id: &'a str,
    /// Username and password.
    pub credentials: Option<(&'a str, &'a str)>,
    /// The last will: topic and payload (retained, QoS 1).
    pub will: Option<(String, String)>,
    /// The keep-alive it announces and pings at (15 s when `None`).
    pub keep_alive: Option<Duration>,
}

impl<'a> Options<'a> {
    /// A device logging in as itself (user name = client id), no will, the default keep-alive.
    pub fn device(id: &'a str, password: &'a str) -> Self {
        Self {
            id,
            credentials: Some((id, password)),
            will: None,
            keep_alive: None,
        }
    }
}

/// Connects to `addr` and waits for the CONNACK; an error names a refusal code.
pub async fn connect(addr: SocketAddr, options: Options<'_>) -> anyhow::Result<Client> {
    let mut mqtt = MqttOptions::new(options.id, addr.ip().to_string(), addr.port());
    mqtt.set_keep_alive(options.keep_alive.unwrap_or(Duration::from_secs(15)));
    mqtt.set_max_packet_size(1024 * 1024, 1024 * 1024);
    if let Some((user, pass)) = options.credentials {
        mqtt.set_credentials(user, pass);
    }
    if let Some((topic, payload)) = options.will {
        mqtt.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 256);
    // As kiosk firmware should: small packets go out at once.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let first = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
        .await
        .context("no CONNACK within 10 s")?;
    match first {
        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {}
        Ok(other) => bail!("unexpected first event {other:?}"),
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => bail!("refused: {code:?}"),
        Err(e) => bail!("connection failed: {e}"),
    }
    let (tx, events) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    if tx
                        .send(Received::Message(topic, p.payload.to_vec(), p.retain))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Received::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(Client {
        client,
        events,
        driver,
    })
}

impl Client {
    /// The next thing the client receives, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message on `topic` (others are skipped), as JSON, within `timeout`.
    pub async fn message_on(
        &mut self,
        topic: &str,
        timeout: Duration,
    ) -> anyhow::Result<(serde_json::Value, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Received::Message(t, payload, retain)) if t == topic => {
                    return Ok((serde_json::from_slice(&payload)?, retain));
                }
                Some(Received::Message(..)) => continue,
                Some(Received::Closed(why)) => bail!("closed while waiting on {topic}: {why}"),
                None => bail!("nothing on {topic} within {timeout:?}"),
            }
        }
    }

    /// Waits for the connection to be closed by the other side; the reason.
    pub async fn closed(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Received::Closed(why) => return Some(why),
                Received::Message(..) => continue,
            }
        }
    }

    /// Drops the connection without DISCONNECT, as a kiosk losing power would.
    pub fn vanish(self) {
        self.driver.abort();
    }
}

/// The payload of [`await_subscribed`]'s probes; readers skip it.
pub const PROBE: &[u8] = b"probe";

/// Waits until every one of `subscribers` has its subscription in place: rumqttc does not report
/// the SUBACK, so `publisher` sends a [`PROBE`] on `topic` (QoS 1) until each subscriber has
/// received one, up to 50 times. Probes that arrive later are the readers' to skip.
pub async fn await_subscribed(
    publisher: &Client,
    topic: &str,
    subscribers: &mut [Client],
) -> anyhow::Result<()> {
    let mut ready = vec![false; subscribers.len()];
    for _ in 0..50 {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, PROBE)
            .await?;
        for (subscriber, ready) in subscribers.iter_mut().zip(ready.iter_mut()) {
            while !*ready {
                match subscriber.next(Duration::from_millis(200)).await {
                    Some(Received::Message(_, p, _)) => *ready = p == PROBE,
                    _ => break,
                }
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
    }
    bail!("not every subscriber subscribed within 50 probes")
}
