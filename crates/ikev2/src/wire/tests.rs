use super::*;
use std::net::Ipv4Addr;

pub(crate) fn sample_init() -> Message {
    Message {
        header: Header {
            spi_i: 0xa1a2a3a4a5a6a7a8,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            message_id: 0,
            length: 0,
        },
        payloads: vec![
            Payload::Sa(vec![Proposal {
                num: 1,
                protocol: ProtocolId::IKE,
                spi: vec![],
                transforms: vec![
                    Transform::with_key_len(TransformType::ENCR, EncrId::AES_GCM_16.0, 256),
                    Transform::new(TransformType::PRF, PrfId::HMAC_SHA2_256.0),
                    Transform::new(TransformType::DH, DhId::CURVE25519.0),
                ],
            }]),
            Payload::Ke {
                group: DhId::CURVE25519,
                data: vec![9; 32],
            },
            Payload::Nonce(vec![7; 32]),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                vec![1; 20],
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                vec![2; 20],
            )),
            Payload::Notify(Notify::new(
                NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            )),
        ],
    }
}

#[test]
fn header_bytes() {
    let b = sample_init().emit();
    assert_eq!(&b[..8], &[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
    assert_eq!(&b[8..16], &[0; 8]);
    assert_eq!(b[16], 33, "next payload SA");
    assert_eq!(b[17], 0x20);
    assert_eq!(b[18], 34);
    assert_eq!(b[19], 0x08);
    assert_eq!(&b[20..24], &[0, 0, 0, 0]);
    assert_eq!(
        u32::from_be_bytes(b[24..28].try_into().unwrap()) as usize,
        b.len()
    );
    // SA payload: next = KE(34), length 4 + proposal(8 + 12 + 8 + 8) = 40
    assert_eq!(&b[28..32], &[34, 0, 0, 40]);
    // proposal: last 0, len 36, num 1, IKE, spi size 0, 3 transforms
    assert_eq!(&b[32..40], &[0, 0, 0, 36, 1, 1, 0, 3]);
    // transform 1 ENCR AES_GCM_16 with key length 256 (TV 0x800e)
    assert_eq!(
        &b[40..52],
        &[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 0x01, 0x00]
    );
}

#[test]
fn round_trip() {
    let m = sample_init();
    let b = m.emit();
    let p = Message::parse(&b).unwrap();
    assert_eq!(p.payloads, m.payloads);
    assert_eq!(p.emit(), b);
}

#[test]
fn every_truncation_is_an_error() {
    let b = sample_init().emit();
    for n in 0..b.len() {
        assert!(Message::parse(&b[..n]).is_err(), "len {n}");
        // also with a header length that claims the truncated size
        let mut t = b[..n].to_vec();
        if t.len() >= HEADER_LEN {
            t[24..28].copy_from_slice(&(n as u32).to_be_bytes());
            assert!(Message::parse(&t).is_err(), "patched len {n}");
        }
    }
}

#[test]
fn unknown_critical_payload_rejected_and_noncritical_kept() {
    let mut m = sample_init();
    m.payloads.push(Payload::Unknown {
        ty: PayloadType(200),
        body: vec![1, 2, 3],
    });
    let mut b = m.emit();
    let parsed = Message::parse(&b);
    assert!(matches!(
        parsed
            .as_ref()
            .map_err(|e| e.to_string())
            .unwrap()
            .payloads
            .last(),
        Some(Payload::Unknown { .. })
    ));
    // set the critical bit on the last payload header
    let last = b.len() - 7;
    b[last + 1] = CRITICAL;
    let e = Message::parse(&b).unwrap_err();
    assert_eq!(e, ParseError::UnsupportedCritical(PayloadType(200)));
    assert_eq!(e.notify_type(), NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD);
}

#[test]
fn all_payload_kinds_round_trip() {
    let payloads = vec![
        Payload::IdI(Identification::fqdn("client.example")),
        Payload::IdR(Identification::ipv4(Ipv4Addr::new(192, 0, 2, 1))),
        Payload::Cert {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x30, 0x00],
        },
        Payload::CertReq {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0xaa; 20],
        },
        Payload::Auth {
            method: AuthMethod::SHARED_KEY_MIC,
            data: vec![5; 32],
        },
        Payload::Cp(Configuration {
            ty: CfgType::CFG_REQUEST,
            attributes: vec![
                CfgAttribute {
                    ty: CfgAttrType::INTERNAL_IP4_ADDRESS,
                    value: vec![],
                },
                CfgAttribute {
                    ty: CfgAttrType::INTERNAL_IP4_DNS,
                    value: vec![],
                },
            ],
        }),
        Payload::Sa(vec![Proposal {
            num: 1,
            protocol: ProtocolId::ESP,
            spi: vec![1, 2, 3, 4],
            transforms: vec![
                Transform::with_key_len(TransformType::ENCR, EncrId::AES_CBC.0, 128),
                Transform::new(TransformType::INTEG, IntegId::HMAC_SHA2_256_128.0),
                Transform::new(TransformType::ESN, EsnId::NO_ESN.0),
            ],
        }]),
        Payload::TsI(vec![TrafficSelector::ipv4_any()]),
        Payload::TsR(vec![
            TrafficSelector::ipv4_range(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 255)),
            TrafficSelector::ipv4_host(Ipv4Addr::new(10, 1, 1, 1)),
        ]),
        Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
        }),
        Payload::Vendor(b"mipsec".to_vec()),
        Payload::Notify(Notify {
            protocol: ProtocolId::ESP,
            spi: vec![9, 9, 9, 9],
            ty: NotifyType::REKEY_SA,
            data: vec![],
        }),
        Payload::Sk {
            first: PayloadType::IDI,
            body: vec![0; 40],
        },
    ];
    let m = Message {
        header: Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_AUTH,
            flags: FLAG_INITIATOR,
            message_id: 1,
            length: 0,
        },
        payloads,
    };
    let b = m.emit();
    assert_eq!(Message::parse(&b).unwrap().payloads, m.payloads);
    let skf = Message {
        payloads: vec![Payload::Skf {
            first: PayloadType::IDI,
            number: 1,
            total: 3,
            body: vec![1; 30],
        }],
        ..m
    };
    let b = skf.emit();
    assert_eq!(Message::parse(&b).unwrap().payloads, skf.payloads);
}

#[test]
fn bad_version_and_nonce_length() {
    let mut b = sample_init().emit();
    b[17] = 0x10;
    assert_eq!(Message::parse(&b), Err(ParseError::BadVersion(1)));
    let mut m = sample_init();
    m.payloads[2] = Payload::Nonce(vec![1; 8]);
    assert!(Message::parse(&m.emit()).is_err());
}

#[test]
fn debug_names_open_enums() {
    assert_eq!(format!("{:?}", NotifyType::COOKIE2), "COOKIE2");
    assert_eq!(format!("{:?}", NotifyType(60000)), "NotifyType(60000)");
    assert_eq!(NotifyType::MOBIKE_SUPPORTED.0, 16396);
    assert_eq!(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED.0, 16430);
}

/// The same IKE_SA_INIT request built independently with scapy 2.6.1
/// (scapy.contrib.ikev2: SA/KE/Nonce/3 x Notify) is byte-identical to ours.
const SCAPY_INIT: &str = "a1a2a3a4a5a6a7a800000000000000002120220800000000000000d02200002800000024010100030300000c01000014800e01000300000802000005000000080400001f28000028001f000009090909090909090909090909090909090909090909090909090909090909092900002407070707070707070707070707070707070707070707070707070707070707072900001c0000400401010101010101010101010101010101010101012900001c000040050202020202020202020202020202020202020202000000080000402e";

#[test]
fn matches_scapy_built_message() {
    let ours = sample_init().emit();
    assert_eq!(hex::encode(&ours), SCAPY_INIT);
    let theirs = hex::decode(SCAPY_INIT).unwrap();
    assert_eq!(
        Message::parse(&theirs).unwrap().payloads,
        sample_init().payloads
    );
}

/// An INFORMATIONAL message whose Delete payload (SPI size 0) claims 65,535 SPIs in 4
/// octets of body. The same bytes are the fuzz corpus entry
/// `fuzz/corpus/message/delete-spi-size-0-count-65535`.
pub(crate) const DELETE_COUNT_BOMB: [u8; 36] = [
    0, 0, 0, 0, 0, 0, 0, 1, // SPIi
    0, 0, 0, 0, 0, 0, 0, 0, // SPIr
    42, 0x20, 37, 0x08, // next payload DELETE, version 2.0, INFORMATIONAL, initiator
    0, 0, 0, 0, // message id
    0, 0, 0, 36, // length
    0, 0, 0, 8, // generic payload header: last, 8 octets
    1, 0, 0xff, 0xff, // protocol IKE, SPI size 0, 65,535 SPIs
];

#[test]
fn delete_count_is_bounded_by_the_bytes_left() {
    // Regression (issue 10): the parser looped num_spis times without checking the bytes
    // left, so SPI size 0 turned 8 octets into 65,535 vectors.
    assert_eq!(
        Message::parse(&DELETE_COUNT_BOMB).map(|m| m.payloads.len()),
        Err(ParseError::BadLength { what: "delete" })
    );
    // The fuzz corpus keeps the same input, as a message and as a bare payload chain.
    let corpus = include_bytes!("../../fuzz/corpus/message/delete-spi-size-0-count-65535");
    assert_eq!(corpus, &DELETE_COUNT_BOMB);
    let chain = include_bytes!("../../fuzz/corpus/message/delete-chain-spi-size-0-count-65535");
    assert!(parse_chain(PayloadType(chain[0]), &chain[1..]).is_err());
    let body = |proto: u8, size: u8, n: u16, spis: &[u8]| {
        let mut b = vec![0, 0, 0, 0, proto, size];
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(spis);
        let len = b.len() as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    };
    let parse = |b: &[u8]| parse_chain(PayloadType::DELETE, b);
    // n x spi_size must equal what remains (RFC 7296 3.11).
    assert!(
        parse(&body(3, 4, 2, &[1, 2, 3, 4])).is_err(),
        "too few octets"
    );
    assert!(
        parse(&body(3, 4, 1, &[1, 2, 3, 4, 5, 6, 7, 8])).is_err(),
        "too many"
    );
    assert!(
        parse(&body(3, 0, 1, &[])).is_err(),
        "SPI size 0 with a count"
    );
    // The valid forms: the IKE SA (size 0, none) and two ESP SPIs.
    assert_eq!(
        parse(&body(1, 0, 0, &[])).unwrap(),
        vec![Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: vec![]
        })]
    );
    let p = parse(&body(3, 4, 2, &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
    assert!(
        matches!(&p[0], Payload::Delete(d) if d.spis == vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]])
    );
}
