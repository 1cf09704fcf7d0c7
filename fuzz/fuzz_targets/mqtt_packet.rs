//! Any bytes from an MQTT client, as the front reads them: framed, parsed by kind, and checked
//! against the topic tree, or refused with an error; never a panic. A CONNECT the front accepts
//! keeps every field but its keep-alive when the front rewrites that for the broker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use venued::domain::devices::DeviceKind;
use venued::mqtt::packet::{self, Kind, LEVEL_V4, LEVEL_V5};
use venued::mqtt::topics::Tree;

/// The front's default `mqtt.max_payload_bytes`.
const MAX_PACKET: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(len)) = packet::frame_len(data, MAX_PACKET) else {
        return;
    };
    assert!(len <= data.len() && len <= MAX_PACKET + 5);
    let packet = &data[..len];
    let tree = Tree::new("venue", "ev");
    let who = [
        None,
        Some((DeviceKind::Kiosk, "k1")),
        Some((DeviceKind::Gateway, "gw1")),
    ];
    match packet::kind(packet) {
        Kind::Connect => {
            if let Ok(connect) = packet::parse_connect(packet) {
                let (id, will) = (
                    connect.client_id.to_string(),
                    connect.will_topic.map(str::to_string),
                );
                let mut rewritten = packet.to_vec();
                packet::set_keep_alive(&mut rewritten, u16::MAX)
                    .expect("a parsed CONNECT rewrites");
                let again = packet::parse_connect(&rewritten).expect("and still parses");
                assert_eq!(again.keep_alive, u16::MAX);
                assert_eq!(again.client_id, id);
                assert_eq!(again.will_topic.map(str::to_string), will);
            }
        }
        Kind::Publish => {
            for level in [LEVEL_V4, LEVEL_V5] {
                if let Ok(publish) = packet::parse_publish(packet, level) {
                    for device in who {
                        let _ = tree.may_publish(device, publish.topic, publish.qos);
                    }
                }
            }
        }
        Kind::Subscribe => {
            for level in [LEVEL_V4, LEVEL_V5] {
                if let Ok(filters) = packet::parse_subscribe(packet, level) {
                    for filter in filters {
                        for device in who {
                            let _ = tree.may_subscribe(device, filter);
                        }
                    }
                }
            }
        }
        _ => {}
    }
});
