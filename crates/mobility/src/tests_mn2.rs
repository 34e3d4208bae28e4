//! MN-2 with one binding at the i-HA (the default): the binding, and with it the
//! user data, follows the preferred interface.

use super::*;

/// The care-of addresses the i-HA holds for the home address.
fn iha_care_of(r: &Rig) -> Vec<Ipv4Addr> {
    r.iha.bindings_of(HOME).iter().map(|b| b.care_of).collect()
}

fn vpn_requests(r: &Rig, i: IfaceId) -> usize {
    r.sent
        .iter()
        .filter(|t| t.iface == i && t.via == Via::Vpn)
        .count()
}

#[test]
fn mn2_the_i_ha_binding_follows_the_interface_inside_and_the_vpn_waits_on_standby() {
    let mut c = cfg();
    c.interface_order = vec![2, 1];
    let mut r = Rig::new(c);
    outside_cvc(&mut r, 2);
    assert_eq!(r.gate(2), Gate::OpenViaVpn(Mode::Cvc));
    assert_eq!(iha_care_of(&r), vec![TIA]);

    // Interface 1 comes up inside: its registration takes the binding, so the
    // outside interface stands by (its TIA registration would take it back).
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert_eq!(r.node.phase(2), Phase::Outside);
    assert_eq!(r.gate(2), Gate::Closed);
    assert_eq!(iha_care_of(&r), vec![IN_ADDR]);
    assert_eq!(
        r.node.preferred(r.now),
        Some((1, Gate::OpenInside(Mode::C)))
    );
    assert!(
        r.node.reason(2).starts_with("standby"),
        "{}",
        r.node.reason(2)
    );
    // The VPN itself stays up: no StopVpn for the outside interface.
    assert!(!r.took_action(|a| matches!(a, Action::StopVpn { iface: 2 })));

    // Ten minutes of re-registrations inside: the standby interface never
    // registers its TIA, and the binding stays inside.
    let before = vpn_requests(&r, 2);
    r.advance(Duration::from_secs(600));
    assert_eq!(vpn_requests(&r, 2), before);
    assert_eq!(iha_care_of(&r), vec![IN_ADDR]);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));

    // The inside interface goes: the TIA is registered through the running VPN
    // at once (no new IKE), and user data moves there.
    let ikes = r.actions.len();
    r.link(1, LinkEvent::CarrierDown);
    assert_eq!(r.gate(2), Gate::OpenViaVpn(Mode::Cvc));
    assert_eq!(iha_care_of(&r), vec![TIA]);
    assert_eq!(
        r.node.preferred(r.now),
        Some((2, Gate::OpenViaVpn(Mode::Cvc)))
    );
    assert!(!r.actions[ikes..]
        .iter()
        .any(|a| matches!(a, Action::StartIke { .. })));

    // It comes back inside: the binding and the data return to it.
    r.advance(Duration::from_secs(1));
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert_eq!(r.gate(2), Gate::Closed);
    assert_eq!(iha_care_of(&r), vec![IN_ADDR]);
    assert_eq!(
        r.node.preferred(r.now),
        Some((1, Gate::OpenInside(Mode::C)))
    );
}

#[test]
fn mn2_with_two_interfaces_outside_the_waiting_one_takes_over_at_once() {
    let mut c = cfg();
    c.interface_order = vec![2, 1];
    let mut r = Rig::new(c);
    outside_cvc(&mut r, 2);
    // Interface 1 on another outside network: the x-home address exists once, so
    // it waits (detecting, gate closed) while interface 2 holds the x-MIP layer.
    r.attach(1, Ipv4Addr::new(192, 168, 2, 9), false, true);
    r.advance(Duration::from_secs(10));
    assert_eq!(r.node.phase(1), Phase::Detecting);
    assert_eq!(r.gate(1), Gate::Closed);
    assert_eq!(r.sent_to(1, X_HA), 0);
    // Interface 2 goes: interface 1 registers with the x-HA at once, not after its
    // round of i-HA retransmissions.
    r.link(2, LinkEvent::CarrierDown);
    assert_eq!(r.sent_to(1, X_HA), 1);
    assert_eq!(r.node.phase(1), Phase::Outside);
    assert!(r.took_action(|a| matches!(a, Action::StartIke { iface: 1, .. })));
}
