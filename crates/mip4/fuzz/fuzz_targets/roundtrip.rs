//! parse -> emit -> parse: whatever parses re-emits to a message that parses to the
//! same value, of the same length. (Reserved bits, sent as zero and ignored on
//! reception, are the only octets allowed to differ.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use mip4::wire::agent::AgentAdvertisement;
use mip4::wire::{RegistrationReply, RegistrationRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RegistrationRequest::parse(data) {
        let b = r.to_bytes();
        assert_eq!(b.len(), data.len(), "request re-emitted with another length");
        assert_eq!(RegistrationRequest::parse(&b).ok(), Some(r));
    }
    if let Ok(r) = RegistrationReply::parse(data) {
        let b = r.to_bytes();
        assert_eq!(b.len(), data.len(), "reply re-emitted with another length");
        assert_eq!(RegistrationReply::parse(&b).ok(), Some(r));
    }
    if let Ok(a) = AgentAdvertisement::parse(data) {
        // Entry sizes above 2 and unknown extensions are not kept: compare reprs.
        let b = a.to_bytes();
        assert_eq!(AgentAdvertisement::parse(&b).ok(), Some(a));
    }
});
