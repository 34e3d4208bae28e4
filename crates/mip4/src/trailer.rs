//! What may follow the Mobile-Home Authentication extension in a Registration
//! Request that reaches the home agent.
//!
//! The rule (RFC 5944 sections 3.6.1.3, 3.7.2.2 and 1.9):
//!
//! * The mobile node puts the MN-HA authentication extension after every
//!   extension meant for the home agent; after it come only extensions for the
//!   foreign agent and the optional MN-FA authentication extension
//!   (section 3.6.1.3).
//! * A foreign agent relaying the request "MUST process and remove any
//!   Extensions following the Mobile-Home Authentication Extension", "MAY
//!   append any of its own non-authentication Extensions of relevance to the
//!   home agent" and appends the FA-HA authentication extension when it shares
//!   a security association with the home agent (section 3.7.2.2).
//!
//! So the home agent accepts, after MN-HA, only a chain of well-formed
//! extensions (each `Type | Length | Data` fitting in the message, RFC 5944
//! section 1.9) made of:
//!
//! * skippable non-authentication extensions (types 128-255), any number;
//! * at most one MN-FA authentication extension (type 33), tolerated for a
//!   foreign agent that did not strip it;
//! * at most one FA-HA authentication extension (type 34), which must be the
//!   last extension of the message (it covers everything before it).
//!
//! Anything else (a second MN-HA extension, a Generalized Authentication
//! extension, any other type 0-127, an extension after FA-HA, or octets that do
//! not form a well-formed extension such as `7f ff` followed by fewer than 255
//! octets) makes the request poorly formed: the home agent denies it with code
//! 134 (section 3.8.2.2 lists 134 for poorly formed requests). Nothing after
//! MN-HA is covered by the mobile node's authenticator, so none of it is ever
//! used for the registration itself.

use crate::wire::extension::{ExtensionIter, ExtensionType};

/// Why the extensions after MN-HA are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailerError {
    /// The octets do not form a chain of complete extensions.
    Malformed,
    /// Well-formed, but an extension that RFC 5944 does not allow there.
    NotAllowed(ExtensionType),
}

/// Checks the extensions of `msg` from offset `start` (just past the MN-HA
/// authentication extension) against the rule of the module documentation.
pub fn check_after_mn_ha(msg: &[u8], start: usize) -> Result<(), TrailerError> {
    let mut mn_fa = false;
    let mut fa_ha = false;
    for e in ExtensionIter::new(msg, start) {
        let e = e.map_err(|_| TrailerError::Malformed)?;
        if fa_ha {
            // FA-HA must be last: this extension follows it.
            return Err(TrailerError::NotAllowed(e.ty));
        }
        match e.ty {
            ExtensionType::MN_FA_AUTH if !mn_fa => mn_fa = true,
            ExtensionType::FA_HA_AUTH => fa_ha = true,
            t if t.is_skippable() && !crate::auth::is_auth(t) => {}
            t => return Err(TrailerError::NotAllowed(t)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(trailer: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 4];
        m.extend_from_slice(trailer);
        m
    }

    #[test]
    fn allowed_trailers() {
        let fa_ha = [34, 4, 0, 0, 1, 0];
        let mn_fa = [33, 4, 0, 0, 1, 1];
        for t in [
            vec![],
            fa_ha.to_vec(),
            mn_fa.to_vec(),
            [&mn_fa[..], &fa_ha[..]].concat(),
            [&[200u8, 1, 9][..], &mn_fa[..], &[130, 0], &fa_ha[..]].concat(),
        ] {
            assert_eq!(check_after_mn_ha(&msg(&t), 4), Ok(()), "{t:02x?}");
        }
    }

    #[test]
    fn refused_trailers() {
        let mn_ha = [32, 4, 0, 0, 1, 0];
        let fa_ha = [34, 4, 0, 0, 1, 0];
        let mn_fa = [33, 4, 0, 0, 1, 1];
        let cases: Vec<(Vec<u8>, TrailerError)> = vec![
            (vec![0x7f, 0xff, 1, 2, 3, 4, 5], TrailerError::Malformed),
            (vec![0x90], TrailerError::Malformed),
            (vec![200, 5, 1], TrailerError::Malformed),
            (
                mn_ha.to_vec(),
                TrailerError::NotAllowed(ExtensionType::MN_HA_AUTH),
            ),
            (vec![0x7f, 0], TrailerError::NotAllowed(ExtensionType(0x7f))),
            (
                vec![36, 1, 0, 0],
                TrailerError::NotAllowed(ExtensionType::GENERALIZED_AUTH),
            ),
            (
                [&fa_ha[..], &[200, 0]].concat(),
                TrailerError::NotAllowed(ExtensionType(200)),
            ),
            (
                [&fa_ha[..], &fa_ha[..]].concat(),
                TrailerError::NotAllowed(ExtensionType::FA_HA_AUTH),
            ),
            (
                [&mn_fa[..], &mn_fa[..]].concat(),
                TrailerError::NotAllowed(ExtensionType::MN_FA_AUTH),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(check_after_mn_ha(&msg(&t), 4), Err(want), "{t:02x?}");
        }
    }
}
