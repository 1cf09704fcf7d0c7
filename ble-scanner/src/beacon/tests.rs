use super::*;

const UUID: [u8; 16] = [
    0xf7, 0x82, 0x6d, 0xa6, 0x4f, 0xa2, 0x4e, 0x98, 0x80, 0x24, 0xbc, 0x5b, 0x71, 0xe0, 0x89, 0x3e,
];

fn ibeacon_bytes(major: u16, minor: u16, power: i8) -> Vec<u8> {
    let mut v = vec![0x02, 0x15];
    v.extend(UUID);
    v.extend(major.to_be_bytes());
    v.extend(minor.to_be_bytes());
    v.push(power as u8);
    v
}

fn advert_mfg(company: u16, data: Vec<u8>) -> Advertisement {
    let mut a = Advertisement::default();
    a.manufacturer_data.insert(company, data);
    a
}

fn advert_eddystone(data: Vec<u8>) -> Advertisement {
    let mut a = Advertisement::default();
    a.service_data.insert(EDDYSTONE_SERVICE, data);
    a
}

fn check(advert: Advertisement, expected: &[Frame]) {
    assert_eq!(parse(&advert), expected);
}

#[test]
fn ibeacon_decodes_big_endian_ids_and_signed_power() {
    check(
        advert_mfg(APPLE_COMPANY_ID, ibeacon_bytes(2, 300, -59)),
        &[Frame::Id {
            id: BeaconId::IBeacon {
                uuid: Uuid::from_bytes(UUID),
                major: 2,
                minor: 300,
            },
            measured_power_1m: -59,
        }],
    );
    let id = BeaconId::IBeacon {
        uuid: Uuid::from_bytes(UUID),
        major: 2,
        minor: 300,
    };
    // The registry's id format (the demo seeds badges this way).
    assert_eq!(
        id.to_string(),
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:2:300"
    );
}

#[test]
fn ibeacon_layout_under_another_company_or_continuity_messages_are_not_ibeacons() {
    check(advert_mfg(0x0059, ibeacon_bytes(1, 1, -59)), &[]);
    // Apple Find My (0x12) and Nearby (0x10) share Apple's company id.
    check(
        advert_mfg(APPLE_COMPANY_ID, vec![0x12, 0x19, 0, 1, 2, 3]),
        &[],
    );
    check(
        advert_mfg(APPLE_COMPANY_ID, vec![0x10, 0x05, 1, 2, 3, 4, 5]),
        &[],
    );
}

#[test]
fn altbeacon_matches_any_company_on_the_beac_code() {
    let mut data = vec![0xBE, 0xAC];
    data.extend(1..=20u8);
    data.extend([0xC5, 0x00]);
    let mut id = [0u8; 20];
    for (i, b) in id.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    check(
        advert_mfg(0x0118, data),
        &[Frame::Id {
            id: BeaconId::AltBeacon(id),
            measured_power_1m: -59,
        }],
    );
    assert_eq!(
        BeaconId::AltBeacon(id).to_string(),
        "altbeacon:0102030405060708090a0b0c0d0e0f1011121314"
    );
}

#[test]
fn eddystone_uid_with_and_without_the_rfu_bytes() {
    let namespace = [0xed, 0xd1, 0xeb, 0xea, 0xc0, 0x4e, 0x5d, 0xef, 0xa0, 0x17];
    let instance = [0, 0, 0, 0, 0x12, 0x34];
    let mut frame = vec![0x00, 0xEE]; // 0 m power -18 dBm -> -59 at 1 m
    frame.extend(namespace);
    frame.extend(instance);
    let expected = [Frame::Id {
        id: BeaconId::Eddystone {
            namespace,
            instance,
        },
        measured_power_1m: -59,
    }];
    check(advert_eddystone(frame.clone()), &expected);
    frame.extend([0, 0]);
    check(advert_eddystone(frame), &expected);
    assert_eq!(
        expected.first().map(|f| match f {
            Frame::Id { id, .. } => id.to_string(),
            _ => String::new(),
        }),
        Some("eddystone:edd1ebeac04e5defa017:000000001234".into())
    );
}

#[test]
fn eddystone_url_expands_scheme_and_suffixes() {
    for (encoded, expected) in [
        (
            &[0x03, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x07][..],
            "https://example.com",
        ),
        (
            &[0x00, b'v', b'e', b'n', b'u', b'e', 0x00, b'x'][..],
            "http://www.venue.com/x",
        ),
        (&[0x02, b'a', 0x0d][..], "http://a.gov"),
    ] {
        let mut frame = vec![0x10, 0xEB];
        frame.extend(encoded);
        check(
            advert_eddystone(frame),
            &[Frame::Url {
                url: expected.into(),
                measured_power_1m: -62,
            }],
        );
    }
}

#[test]
fn eddystone_url_refuses_reserved_bytes_schemes_and_overlong_urls() {
    for bad in [
        vec![0x10, 0xEB, 0x04, b'a'],       // scheme 4 is reserved
        vec![0x10, 0xEB, 0x03, b'a', 0x0E], // 0x0E is reserved
        vec![0x10, 0xEB, 0x03, b'a', 0x20], // space is reserved
        vec![0x10, 0xEB, 0x03, b'a', 0xFF], // high bytes are reserved
        [vec![0x10, 0xEB, 0x03], vec![b'a'; 18]].concat(), // 18 > 17 bytes
    ] {
        check(advert_eddystone(bad), &[]);
    }
}

#[test]
fn eddystone_tlm_decodes_the_spec_example_and_unsupported_values() {
    // 3000 mV, 25.5 °C (0x1980), 10 adverts, 10.0 s.
    check(
        advert_eddystone(vec![
            0x20, 0x00, 0x0B, 0xB8, 0x19, 0x80, 0, 0, 0, 10, 0, 0, 0, 100,
        ]),
        &[Frame::Telemetry(Telemetry {
            battery_mv: Some(3000),
            temperature_c: Some(25.5),
            adv_count: 10,
            uptime_ds: 100,
        })],
    );
    // Negative temperature: -1.5 °C = 0xFE80.
    check(
        advert_eddystone(vec![0x20, 0x00, 0, 0, 0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]),
        &[Frame::Telemetry(Telemetry {
            battery_mv: None,
            temperature_c: Some(-1.5),
            adv_count: 0,
            uptime_ds: 0,
        })],
    );
    // 0x8000: temperature not supported.
    let frames = parse(&advert_eddystone(vec![
        0x20, 0x00, 0x0B, 0xB8, 0x80, 0x00, 0, 0, 0, 1, 0, 0, 0, 1,
    ]));
    assert!(matches!(
        frames.as_slice(),
        [Frame::Telemetry(Telemetry {
            temperature_c: None,
            battery_mv: Some(3000),
            ..
        })]
    ));
    // Version 1 is encrypted TLM: opaque here.
    check(
        advert_eddystone([vec![0x20, 0x01], vec![0; 16]].concat()),
        &[],
    );
}

#[test]
fn eddystone_eid_is_an_opaque_id() {
    check(
        advert_eddystone(vec![0x30, 0xEE, 1, 2, 3, 4, 5, 6, 7, 8]),
        &[Frame::Id {
            id: BeaconId::Eid([1, 2, 3, 4, 5, 6, 7, 8]),
            measured_power_1m: -59,
        }],
    );
}

#[test]
fn every_truncation_and_extension_of_a_valid_frame_is_ignored() {
    let valid: Vec<Advertisement> = vec![
        advert_mfg(APPLE_COMPANY_ID, ibeacon_bytes(1, 2, -60)),
        advert_eddystone(vec![
            0x20, 0x00, 0x0B, 0xB8, 0x19, 0x80, 0, 0, 0, 10, 0, 0, 0, 100,
        ]),
        advert_eddystone(vec![0x30, 0xEE, 1, 2, 3, 4, 5, 6, 7, 8]),
    ];
    for advert in valid {
        let bytes: Vec<u8> = advert
            .manufacturer_data
            .values()
            .chain(advert.service_data.values())
            .next()
            .cloned()
            .unwrap_or_default();
        let rebuild = |data: Vec<u8>| {
            let mut a = advert.clone();
            if let Some(v) = a.manufacturer_data.values_mut().next() {
                *v = data;
            } else if let Some(v) = a.service_data.values_mut().next() {
                *v = data;
            }
            a
        };
        assert_eq!(parse(&rebuild(bytes.clone())).len(), 1);
        for len in 0..bytes.len() {
            assert_eq!(
                parse(&rebuild(bytes[..len].to_vec())),
                vec![],
                "truncated to {len}"
            );
        }
        assert_eq!(
            parse(&rebuild([bytes.clone(), vec![0]].concat())),
            vec![],
            "one byte longer"
        );
    }
}

#[test]
fn random_garbage_never_panics() {
    // A deterministic xorshift generator: the same garbage every run, no extra dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 32) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias towards valid prefixes so the deeper branches are reached.
        match next() % 4 {
            0 if len >= 2 => data[..2].copy_from_slice(&[0x02, 0x15]),
            1 if len >= 2 => data[..2].copy_from_slice(&[0xBE, 0xAC]),
            2 if len >= 1 => data[0] = [0x00, 0x10, 0x20, 0x30][(next() % 4) as usize],
            _ => {}
        }
        let _ = parse(&advert_mfg(APPLE_COMPANY_ID, data.clone()));
        let _ = parse(&advert_eddystone(data));
    }
}

#[test]
fn ids_round_trip_through_their_registry_form() {
    let ids = [
        BeaconId::IBeacon {
            uuid: Uuid::from_bytes(UUID),
            major: 2,
            minor: 65_535,
        },
        BeaconId::AltBeacon([7; 20]),
        BeaconId::Eddystone {
            namespace: [0xab; 10],
            instance: [1, 2, 3, 4, 5, 6],
        },
        BeaconId::Eid([9; 8]),
    ];
    for id in ids {
        assert_eq!(id.to_string().parse::<BeaconId>(), Ok(id.clone()));
    }
    for bad in [
        "",
        "ibeacon:",
        "ibeacon:x:1:2",
        "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:70000",
        "eid:0102",
        "eddystone:ab",
        "mac:c0:11",
        "altbeacon:zz",
    ] {
        assert!(bad.parse::<BeaconId>().is_err(), "{bad}");
    }
}

#[test]
fn synthesised_ibeacon_payloads_parse_back() {
    let uuid = Uuid::from_bytes(UUID);
    let data = ibeacon_payload(uuid, 2, 7, -59);
    assert_eq!(
        ibeacon(&data),
        Some(Frame::Id {
            id: BeaconId::IBeacon {
                uuid,
                major: 2,
                minor: 7
            },
            measured_power_1m: -59
        })
    );
}
