//! Just enough of the MQTT 3.1.1 / 5 wire format for the front to frame a client's byte stream
//! and read what it must check: CONNECT (identity, credentials, will), PUBLISH (topic, QoS) and
//! SUBSCRIBE (filters). Everything else passes through unread; the broker parses it fully.
//!
//! Pure functions over byte slices, so they are unit-tested and fuzzed without sockets.

/// MQTT 3.1.1 protocol level.
pub const LEVEL_V4: u8 = 4;
/// MQTT 5 protocol level.
pub const LEVEL_V5: u8 = 5;

/// Why a client's bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The remaining-length field is longer than four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The packet is larger than the configured limit.
    #[error("packet of {size} bytes is over the {max}-byte limit (mqtt.max_payload_bytes)")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A field runs past the end of the packet.
    #[error("packet ends inside `{0}`")]
    Truncated(&'static str),
    /// A string is not UTF-8.
    #[error("`{0}` is not UTF-8")]
    NotUtf8(&'static str),
    /// The first packet was not CONNECT, or CONNECT came twice.
    #[error("expected CONNECT first (and only once)")]
    NotConnect,
    /// Not the MQTT protocol, or a level this listener does not speak.
    #[error("protocol `{name}` level {level} is not spoken on this port")]
    Protocol {
        /// The protocol name sent.
        name: String,
        /// The level sent.
        level: u8,
    },
}

/// The MQTT control packet types the front distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CONNECT (1).
    Connect,
    /// PUBLISH (3).
    Publish,
    /// SUBSCRIBE (8).
    Subscribe,
    /// Anything else.
    Other,
}

/// The kind of a framed packet.
pub fn kind(packet: &[u8]) -> Kind {
    match packet.first().map(|b| b >> 4) {
        Some(1) => Kind::Connect,
        Some(3) => Kind::Publish,
        Some(8) => Kind::Subscribe,
        _ => Kind::Other,
    }
}

/// The length of the first whole packet in `buf`, `None` if more bytes are needed.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, PacketError> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            if total > max {
                return Err(PacketError::TooLarge { size: total, max });
            }
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(PacketError::BadLength)
}

/// A parsed CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level (4 or 5).
    pub level: u8,
    /// Keep-alive, seconds.
    pub keep_alive: u16,
    /// Client id.
    pub client_id: &'a str,
    /// The will's topic, if a will is set.
    pub will_topic: Option<&'a str>,
    /// The will's QoS.
    pub will_qos: u8,
    /// Username.
    pub username: Option<&'a str>,
    /// Password (bytes; devices use UTF-8).
    pub password: Option<&'a [u8]>,
}

/// A parsed PUBLISH (header fields only; the payload stays in the packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Topic name (empty when a v5 topic alias stands in for it).
    pub topic: &'a str,
    /// QoS 0, 1 or 2 (3 is malformed and reported as is).
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// Whether a v5 Topic Alias property is present.
    pub topic_alias: bool,
}

/// Replaces the keep-alive of a CONNECT packet (one [`parse_connect`] accepted) with `secs`, in
/// place: the field has a fixed size, so nothing else moves.
pub fn set_keep_alive(packet: &mut [u8], secs: u16) -> Result<(), PacketError> {
    let mut r = Reader::after_fixed_header(packet);
    r.string("protocol name")?;
    r.u8("protocol level")?;
    r.u8("connect flags")?;
    let at = r.at;
    r.u16("keep alive")?;
    packet[at..at + 2].copy_from_slice(&secs.to_be_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Positions after the fixed header of a framed packet.
    fn after_fixed_header(packet: &'a [u8]) -> Self {
        let mut at = 1;
        while packet.get(at).is_some_and(|b| b & 0x80 != 0) {
            at += 1;
        }
        Self {
            buf: packet,
            at: at + 1,
        }
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        let end = self.at.checked_add(n).ok_or(PacketError::Truncated(what))?;
        let slice = self
            .buf
            .get(self.at..end)
            .ok_or(PacketError::Truncated(what))?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PacketError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn binary(&mut self, what: &'static str) -> Result<&'a [u8], PacketError> {
        let len = self.u16(what)?;
        self.bytes(usize::from(len), what)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, PacketError> {
        std::str::from_utf8(self.binary(what)?).map_err(|_| PacketError::NotUtf8(what))
    }

    fn varint(&mut self, what: &'static str) -> Result<usize, PacketError> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8(what)?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PacketError::BadLength)
    }

    /// The v5 property block, returned whole.
    fn properties(&mut self, what: &'static str) -> Result<&'a [u8], PacketError> {
        let len = self.varint(what)?;
        self.bytes(len, what)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        self.at = self.buf.len();
        rest
    }
}

/// Parses a framed CONNECT packet.
pub fn parse_connect(packet: &[u8]) -> Result<Connect<'_>, PacketError> {
    if kind(packet) != Kind::Connect {
        return Err(PacketError::NotConnect);
    }
    let mut r = Reader::after_fixed_header(packet);
    let name = r.string("protocol name")?;
    let level = r.u8("protocol level")?;
    if name != "MQTT" || !(level == LEVEL_V4 || level == LEVEL_V5) {
        return Err(PacketError::Protocol {
            name: name.chars().take(16).collect(),
            level,
        });
    }
    let flags = r.u8("connect flags")?;
    let keep_alive = r.u16("keep alive")?;
    if level == LEVEL_V5 {
        r.properties("connect properties")?;
    }
    let client_id = r.string("client id")?;
    let mut will_topic = None;
    if flags & 0x04 != 0 {
        if level == LEVEL_V5 {
            r.properties("will properties")?;
        }
        will_topic = Some(r.string("will topic")?);
        r.binary("will payload")?;
    }
    let username = match flags & 0x80 != 0 {
        true => Some(r.string("username")?),
        false => None,
    };
    let password = match flags & 0x40 != 0 {
        true => Some(r.binary("password")?),
        false => None,
    };
    Ok(Connect {
        level,
        keep_alive,
        client_id,
        will_topic,
        will_qos: (flags >> 3) & 0x03,
        username,
        password,
    })
}

/// Parses a framed PUBLISH packet's header.
pub fn parse_publish(packet: &[u8], level: u8) -> Result<Publish<'_>, PacketError> {
    let first = packet.first().copied().unwrap_or_default();
    let qos = (first >> 1) & 0x03;
    let mut r = Reader::after_fixed_header(packet);
    let topic = r.string("topic")?;
    if qos > 0 {
        r.u16("packet id")?;
    }
    let mut topic_alias = false;
    if level == LEVEL_V5 {
        let props = r.properties("publish properties")?;
        topic_alias = has_property(props, 0x23);
    }
    r.rest();
    Ok(Publish {
        topic,
        qos,
        retain: first & 0x01 != 0,
        topic_alias,
    })
}

/// The topic filters of a framed SUBSCRIBE packet.
pub fn parse_subscribe(packet: &[u8], level: u8) -> Result<Vec<&str>, PacketError> {
    let mut r = Reader::after_fixed_header(packet);
    r.u16("packet id")?;
    if level == LEVEL_V5 {
        r.properties("subscribe properties")?;
    }
    let mut filters = Vec::new();
    while r.at < r.buf.len() {
        filters.push(r.string("topic filter")?);
        r.u8("subscription options")?;
    }
    Ok(filters)
}

/// Whether a v5 property block holds property `id`. Walks the block by each property's
/// encoding (MQTT 5 §2.2.2.2), so a value byte is never mistaken for an id.
fn has_property(props: &[u8], id: u8) -> bool {
    let mut r = Reader { buf: props, at: 0 };
    while r.at < props.len() {
        let Ok(this) = r.varint("property id") else {
            return false;
        };
        if this == usize::from(id) {
            return true;
        }
        let skipped = match this {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => r.bytes(1, "p").map(|_| ()),
            0x13 | 0x21 | 0x22 | 0x23 => r.bytes(2, "p").map(|_| ()),
            0x02 | 0x11 | 0x18 | 0x27 => r.bytes(4, "p").map(|_| ()),
            0x0B => r.varint("p").map(|_| ()),
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                r.binary("p").map(|_| ())
            }
            0x26 => r.binary("p").and_then(|_| r.binary("p")).map(|_| ()),
            _ => return false,
        };
        if skipped.is_err() {
            return false;
        }
    }
    false
}

/// CONNACK return codes (3.1.1) and their MQTT 5 reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Identifier rejected (v4 2, v5 0x85).
    BadClientId,
    /// Server unavailable (v4 3, v5 0x88): over the connection or failure budget.
    Unavailable,
    /// Bad user name or password (v4 4, v5 0x86).
    BadCredentials,
    /// Not authorized (v4 5, v5 0x87).
    NotAuthorized,
}

/// A CONNACK refusing the connection, in the client's protocol level.
pub fn connack_refusal(level: u8, refusal: Refusal) -> Vec<u8> {
    let (v4, v5) = match refusal {
        Refusal::BadClientId => (2, 0x85),
        Refusal::Unavailable => (3, 0x88),
        Refusal::BadCredentials => (4, 0x86),
        Refusal::NotAuthorized => (5, 0x87),
    };
    match level {
        LEVEL_V5 => vec![0x20, 3, 0, v5, 0],
        _ => vec![0x20, 2, 0, v4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mut len = body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }

    fn connect(level: u8, client: &str, will: Option<&str>, user: Option<(&str, &str)>) -> Vec<u8> {
        let mut body = string("MQTT");
        body.push(level);
        let mut flags = 0x02;
        if will.is_some() {
            flags |= 0x04 | 0x08;
        }
        if user.is_some() {
            flags |= 0xC0;
        }
        body.push(flags);
        body.extend_from_slice(&30u16.to_be_bytes());
        if level == LEVEL_V5 {
            body.extend_from_slice(&[5, 0x11, 0, 0, 0, 60]);
        }
        body.extend(string(client));
        if let Some(topic) = will {
            if level == LEVEL_V5 {
                body.push(0);
            }
            body.extend(string(topic));
            body.extend(string("{\"state\":\"lost\"}"));
        }
        if let Some((u, p)) = user {
            body.extend(string(u));
            body.extend(string(p));
        }
        frame(0x10, &body)
    }

    #[test]
    fn the_keep_alive_is_rewritten_in_place_and_nothing_else_changes() {
        for level in [LEVEL_V4, LEVEL_V5] {
            let before = connect(
                level,
                "kiosk-1",
                Some("v/e/k/status"),
                Some(("kiosk-1", "pw")),
            );
            let mut after = before.clone();
            set_keep_alive(&mut after, 600).expect("rewrites");
            let c = parse_connect(&after).expect("still parses");
            assert_eq!(c.keep_alive, 600);
            assert_eq!(c.client_id, "kiosk-1");
            assert_eq!(c.password, Some(&b"pw"[..]));
            let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            assert!(changed <= 2 && before.len() == after.len());
        }
    }

    #[test]
    fn connect_v4_and_v5_give_identity_will_and_credentials() {
        for level in [LEVEL_V4, LEVEL_V5] {
            let packet = connect(
                level,
                "kiosk-1",
                Some("v/e/kiosk/kiosk-1/status"),
                Some(("kiosk-1", "pw")),
            );
            let c = parse_connect(&packet).expect("parses");
            assert_eq!(c.level, level);
            assert_eq!(c.client_id, "kiosk-1");
            assert_eq!(c.keep_alive, 30);
            assert_eq!(c.will_topic, Some("v/e/kiosk/kiosk-1/status"));
            assert_eq!(c.will_qos, 1);
            assert_eq!(c.username, Some("kiosk-1"));
            assert_eq!(c.password, Some(&b"pw"[..]));
        }
        let anonymous = connect(LEVEL_V4, "sign", None, None);
        let c = parse_connect(&anonymous).expect("parses");
        assert_eq!((c.username, c.password, c.will_topic), (None, None, None));
    }

    #[test]
    fn connect_rejects_other_protocols_and_truncation() {
        let mut old = string("MQIsdp");
        old.extend([3, 2, 0, 30]);
        old.extend(string("c"));
        assert!(matches!(
            parse_connect(&frame(0x10, &old)),
            Err(PacketError::Protocol { level: 3, .. })
        ));
        let whole = connect(LEVEL_V4, "kiosk-1", None, Some(("u", "p")));
        for cut in 2..whole.len() {
            // A truncated packet re-framed with a shorter length must be refused, not panic.
            let body = &whole[2..cut];
            assert!(parse_connect(&frame(0x10, body)).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_connect(&frame(0x30, &[])),
            Err(PacketError::NotConnect)
        );
    }

    #[test]
    fn framing_waits_for_whole_packets_and_enforces_the_limit() {
        let packet = frame(0x30, &[0u8; 300]);
        assert_eq!(frame_len(&packet[..1], 1024), Ok(None));
        assert_eq!(frame_len(&packet[..200], 1024), Ok(None));
        assert_eq!(frame_len(&packet, 1024), Ok(Some(packet.len())));
        assert_eq!(
            frame_len(&packet, 100),
            Err(PacketError::TooLarge {
                size: 303,
                max: 100
            })
        );
        assert_eq!(
            frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(PacketError::BadLength)
        );
    }

    #[test]
    fn publish_header_by_level() {
        let mut body = string("v/e/kiosk/k1/checkin");
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(b"{}");
        let packet = frame(0x33, &body);
        let p = parse_publish(&packet, LEVEL_V4).expect("parses");
        assert_eq!(
            (p.topic, p.qos, p.retain, p.topic_alias),
            ("v/e/kiosk/k1/checkin", 1, true, false)
        );

        let mut v5 = string("");
        v5.extend_from_slice(&[3, 0x23, 0, 1]);
        v5.extend_from_slice(b"x");
        let packet = frame(0x30, &v5);
        let p = parse_publish(&packet, LEVEL_V5).expect("parses");
        assert_eq!((p.topic, p.qos, p.topic_alias), ("", 0, true));
    }

    #[test]
    fn subscribe_filters() {
        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend(string("v/e/presence/hall"));
        body.push(1);
        body.extend(string("v/e/daemon/status"));
        body.push(0);
        let packet = frame(0x82, &body);
        let filters = parse_subscribe(&packet, LEVEL_V4).expect("parses");
        assert_eq!(filters, ["v/e/presence/hall", "v/e/daemon/status"]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = connect(LEVEL_V5, "kiosk-1", Some("t"), Some(("kiosk-1", "pw")));
        for round in 0..100_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(0..96);
                (0..len).map(|_| rng.r#gen()).collect()
            } else {
                // A valid CONNECT with a few bytes flipped: deeper paths than pure noise.
                let mut b = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.r#gen();
                }
                b
            };
            let _ = frame_len(&bytes, 1 << 20);
            let _ = parse_connect(&bytes);
            for level in [LEVEL_V4, LEVEL_V5] {
                let _ = parse_publish(&bytes, level);
                let _ = parse_subscribe(&bytes, level);
            }
        }
    }

    #[test]
    fn refusals_use_each_levels_codes() {
        assert_eq!(
            connack_refusal(LEVEL_V4, Refusal::BadCredentials),
            [0x20, 2, 0, 4]
        );
        assert_eq!(
            connack_refusal(LEVEL_V5, Refusal::NotAuthorized),
            [0x20, 3, 0, 0x87, 0]
        );
    }
}
