//! Every Mobile IPv4 parser on arbitrary bytes: errors are fine, panics are not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mip4::wire::agent::{AgentAdvertisement, AgentSolicitation};
use mip4::wire::extension::{AuthKind, ExtensionIter};
use mip4::wire::tunnel::TunnelData;
use mip4::wire::{Extension, RegistrationReply, RegistrationRequest};

fuzz_target!(|data: &[u8]| {
    let _ = RegistrationRequest::parse(data);
    let _ = RegistrationReply::parse(data);
    for start in [20, 24] {
        for e in ExtensionIter::new(data, start).flatten() {
            let _ = Extension::parse(&e);
        }
        for kind in [AuthKind::MnHa, AuthKind::MnFa, AuthKind::FaHa] {
            let _ = mip4::auth::find(data, start, kind);
        }
    }
    let _ = TunnelData::parse(data);
    let _ = AgentAdvertisement::parse(data);
    let _ = AgentSolicitation::parse(data);
});
