//! The message parser never panics, and parse -> emit -> parse is stable.
#![no_main]
use ikev2::wire::{parse_chain, Message, PayloadType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.emit()).expect("re-parse of emitted message");
        assert_eq!(again.payloads, m.payloads);
    }
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(p) = parse_chain(PayloadType(first), rest) {
            let mut out = Vec::new();
            let f = ikev2::wire::emit_chain(&p, &mut out);
            assert_eq!(parse_chain(f, &out).expect("re-parse of emitted chain"), p);
        }
    }
});
