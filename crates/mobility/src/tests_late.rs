//! MN-6, the late i-HA reply, with the i-HA silent for a while (SIGSTOP in the lab,
//! `crates/lab/tests/late_reply.rs`): what reached it waits in its socket and is
//! processed in order when it answers again.

use super::*;

impl Rig {
    /// The silent i-HA answers again: it processes what waited, in order; what the
    /// node sends meanwhile (on the replies) queues behind, as in a socket.
    fn release_iha(&mut self) {
        loop {
            let next = self
                .iha_held
                .as_mut()
                .and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
            let Some(t) = next else { break };
            self.deliver(t, true);
            self.pump();
        }
        self.iha_held = None;
    }
}

/// The node on an inside network whose i-HA is silent hears only the x-HA, goes
/// outside (cvc) and registers its TIA with the i-HA through the tunnel. The i-HA
/// then processes the direct request first and the TIA's after it. The node switches
/// to the i-HA directly on the direct reply, and the i-HA's binding must end on the
/// node's own address: with the binding left on the TIA (whose VPN the node just
/// stopped) every packet to the node would be lost until the next re-registration.
#[test]
fn mn6_late_i_ha_reply_after_the_tia_request_leaves_the_binding_direct() {
    let mut r = Rig::new(cfg());
    r.iha_held = Some(Vec::new());
    r.attach(1, IN_ADDR, true, true);
    assert_eq!(r.node.phase(1), Phase::Outside, "only the x-HA answered");
    assert!(r.took_action(|a| matches!(a, Action::StartIke { .. })));
    // IKE takes its time (the lab: 27 ms): the TIA's request carries a later
    // timestamp than the direct one, so the i-HA accepts both.
    r.advance(Duration::from_millis(30));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    r.advance(Duration::from_millis(500));
    let held: Vec<Via> = r.iha_held.iter().flatten().map(|t| t.via).collect();
    assert_eq!(
        held,
        vec![Via::Plain, Via::Vpn],
        "the direct request, then the TIA's through the tunnel"
    );
    r.release_iha();
    r.advance(Duration::from_millis(10));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert!(r.took_action(|a| *a == Action::StopVpn { iface: 1 }));
    let b = r.iha.bindings_of(HOME);
    assert_eq!(
        b.iter().map(|b| b.care_of).collect::<Vec<_>>(),
        vec![IN_ADDR],
        "the i-HA tunnels to the node's own address"
    );
    // And nothing undoes it: a later re-registration goes directly too.
    r.advance(Duration::from_secs(120));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert_eq!(r.iha.bindings_of(HOME)[0].care_of, IN_ADDR);
}
