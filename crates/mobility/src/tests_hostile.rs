//! Hostile and failing surroundings, the core's part: failing agents as the shell
//! reports them (issue 16 item 5), rogue agents, bad configurations, and malformed,
//! truncated and replayed input.

use super::*;

fn agent_adv(sequence: u16) -> Advertisement {
    Advertisement {
        agent: AGENT,
        care_of: AGENT,
        lifetime: 30,
        sequence,
        nai: None,
    }
}

/// RFC 5944 3.6.1.2: the foreign agent in use advertises a sequence number below
/// 256 after a higher one: it rebooted and lost its visitor list. The node closes
/// the gate at once and registers again through it (re-proving inside). Ordinary
/// increments and wrap-arounds past 256 change nothing.
#[test]
fn a_rebooted_foreign_agent_is_a_status_change_and_the_node_registers_again() {
    let mut c = cfg();
    c.trusted_agents = vec![AGENT];
    let mut r = Rig::new(c);
    r.reach.insert(1, (true, false));
    r.link(1, LinkEvent::CarrierUp);
    let (n, w) = (r.now, r.wall());
    r.node.handle_advertisement(n, w, 1, agent_adv(300));
    r.pump();
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::F));
    let epoch = r.node.epoch(1);
    let proofs = r.node.stats().inside_proofs;
    for seq in [301, 302, 256] {
        r.advance(Duration::from_secs(1));
        let (n, w) = (r.now, r.wall());
        r.node.handle_advertisement(n, w, 1, agent_adv(seq));
        r.pump();
    }
    assert_eq!(r.node.epoch(1), epoch, "no reboot seen: nothing changes");
    // The agent reboots: the node's binding through it is gone.
    r.iha = {
        let mut hc = mip4::ha::HaConfig::new(I_HA);
        hc.trusted_networks = vec![Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()];
        let mut h = HomeAgent::new(hc, [3; 32]);
        h.add_mobile_node(MobileNodeConfig {
            home_addr: Some(HOME),
            nai: None,
            sas: vec![sa(b"i-key")],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
        h
    };
    r.advance(Duration::from_secs(1));
    let (n, w) = (r.now, r.wall());
    let sent = r.sent_to(1, AGENT);
    r.node.handle_advertisement(n, w, 1, agent_adv(0));
    assert_eq!(r.node.gate(1, n), Gate::Closed, "closed at once");
    r.pump();
    assert!(r.node.epoch(1) > epoch);
    assert_eq!(r.node.stats().agent_reboots, 1);
    assert!(
        r.sent_to(1, AGENT) > sent,
        "registered again through the agent"
    );
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::F));
    assert!(r.node.stats().inside_proofs > proofs);
    assert_eq!(r.iha.bindings_of(HOME).len(), 1, "the HA binds us again");
}

/// A reboot seen from an agent the node does not use, or from an untrusted one,
/// changes nothing.
#[test]
fn a_reboot_of_another_agent_changes_nothing() {
    let mut c = cfg();
    c.trusted_agents = vec![AGENT];
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    let (n, w) = (r.now, r.wall());
    for seq in [500, 3] {
        r.node.handle_advertisement(n, w, 1, agent_adv(seq));
        r.pump();
    }
    assert_eq!(r.node.stats().agent_reboots, 0);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
}

/// The i-HA restarted without its state: the node is inside with a valid proof but
/// no binding. When the shell reports a silent tunnel, the node re-registers at
/// once (not at T_MONITOR - grace), one request at a time; outside or detecting the
/// report does nothing. A failed probe is a status change (the gate closes).
#[test]
fn a_silent_binding_is_probed_with_a_re_registration() {
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    // Restart without state.
    let restarted = {
        let mut hc = mip4::ha::HaConfig::new(I_HA);
        hc.trusted_networks = vec![Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()];
        let mut h = HomeAgent::new(hc, [4; 32]);
        h.add_mobile_node(MobileNodeConfig {
            home_addr: Some(HOME),
            nai: None,
            sas: vec![sa(b"i-key")],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
        h
    };
    r.iha = restarted;
    assert_eq!(r.iha.bindings_of(HOME).len(), 0);
    r.advance(Duration::from_secs(5));
    let sent = r.sent_to(1, I_HA);
    let (n, w) = (r.now, r.wall());
    r.node.handle_binding_silent(n, w, 1);
    // Closed while the binding is in doubt (a silent move must not keep plaintext
    // flowing until T_MONITOR).
    assert_eq!(r.gate(1), Gate::Closed);
    r.pump();
    assert_eq!(r.sent_to(1, I_HA), sent + 1, "one re-registration, at once");
    assert_eq!(r.iha.bindings_of(HOME).len(), 1, "bound again");
    assert_eq!(r.node.stats().silence_probes, 1);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    // Unreachable now: the probe fails and the gate closes (MN-5 via MN-3).
    r.reach.insert(1, (false, false));
    r.advance(Duration::from_secs(1));
    let (n, w) = (r.now, r.wall());
    r.node.handle_binding_silent(n, w, 1);
    r.node.handle_binding_silent(n, w, 1);
    assert_eq!(r.node.stats().silence_probes, 2, "one probe at a time");
    assert_eq!(r.gate(1), Gate::Closed, "closed from the report on");
    r.pump();
    r.advance(Duration::from_secs(20));
    assert_eq!(r.gate(1), Gate::Closed);
    assert_ne!(r.node.phase(1), Phase::Inside);
    // Not inside: a report does nothing.
    let n2 = r.node.stats().silence_probes;
    let (n, w) = (r.now, r.wall());
    r.node.handle_binding_silent(n, w, 1);
    assert_eq!(r.node.stats().silence_probes, n2);
}

/// A VPN client that cannot come up (the binary is missing, the gateway refuses
/// it): each failure is a status change that asks the x-HA again and commands a
/// fresh IKE. Without a backoff that loop ran as fast as the x-HA answered
/// (10,900 client spawns in 20 s in the lab); now the starts thin out to one
/// every 4 s, the first retry still at once, and a client that comes up resets it.
#[test]
fn a_vpn_client_that_keeps_failing_is_retried_with_a_backoff() {
    let mut c = cfg();
    c.detection_period = Duration::ZERO;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    let starts = |r: &Rig| {
        r.actions
            .iter()
            .filter(|a| matches!(a, Action::StartIke { .. }))
            .count()
    };
    assert_eq!(starts(&r), 1);
    // Every client started fails at once, for 20 simulated seconds.
    r.vpn(1, VpnEvent::Down);
    let mut seen = 1;
    let mut at = Vec::new();
    for _ in 0..2000 {
        while starts(&r) > seen && seen < 100 {
            seen += 1;
            at.push(r.now - r.t0);
            r.vpn(1, VpnEvent::Down);
        }
        r.advance(Duration::from_millis(10));
    }
    let n = starts(&r);
    assert!((6..=12).contains(&n), "{n} starts in 20 s: {at:?}");
    assert!(
        at[0] < Duration::from_millis(50),
        "first retry at once: {at:?}"
    );
    let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .rev()
            .take(2)
            .all(|g| *g >= Duration::from_millis(3900)),
        "the last retries are 4 s apart: {gaps:?}"
    );
    // The gate never opened, and a client that comes up clears the backoff.
    assert_eq!(r.gate(1), Gate::Closed);
    r.advance(Duration::from_secs(5));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    let before = starts(&r);
    r.vpn(1, VpnEvent::Down);
    r.advance(Duration::from_millis(20));
    assert_eq!(
        starts(&r),
        before + 1,
        "a working client's first failure restarts at once"
    );
}

#[test]
fn a_rogue_agent_never_takes_the_node_off_a_working_path() {
    let mut c = cfg();
    c.trusted_agents = vec![Ipv4Addr::new(10, 1, 7, 1)];
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    let epoch = r.node.epoch(1);
    let (n, w) = (r.now, r.wall());
    for agent in [Ipv4Addr::new(10, 20, 0, 66), Ipv4Addr::new(10, 1, 7, 1)] {
        let adv = Advertisement {
            agent,
            care_of: agent,
            lifetime: 9000,
            sequence: 0,
            nai: Some("fa@corp.example".into()),
        };
        r.node.handle_advertisement(n, w, 1, adv);
        r.pump();
    }
    assert_eq!(r.node.stats().untrusted_agent_ads, 1);
    assert_eq!(
        r.node.epoch(1),
        epoch,
        "make-before-break: no status change"
    );
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = cfg();
    c.grace = c.t_monitor;
    assert_eq!(
        MobileNode::new(c, [0; 32]).err(),
        Some(ConfigError::TMonitor)
    );
    let mut c = cfg();
    c.initial_rto = c.grace;
    assert_eq!(
        MobileNode::new(c, [0; 32]).err(),
        Some(ConfigError::RetransmitLongerThanGrace)
    );
    let mut c = cfg();
    c.detection_period = Duration::MAX;
    assert_eq!(
        MobileNode::new(c, [0; 32]).err(),
        Some(ConfigError::DurationTooLong("detection_period"))
    );
    assert!(cfg().validate().is_ok());
}

#[test]
fn malformed_and_unknown_datagrams_are_counted_drops() {
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    let (n, w) = (r.now, r.wall());
    let from = SocketAddrV4::new(I_HA, 434);
    for p in [&[][..], &[3u8, 0, 1][..], &[3u8; 24][..]] {
        r.node.handle_datagram(n, w, 1, Via::Plain, from, p);
        r.node.handle_datagram(n, w, 77, Via::Vpn, from, p);
    }
    assert!(r.node.stats().dropped_datagrams >= 4);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
}

#[test]
fn random_truncated_and_replayed_input_never_panics_nor_opens_a_gate() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut c = cfg();
    c.outside = Outside::Mobike;
    let mut r = Rig::new(c);
    r.advance(Duration::from_secs(100));
    r.attach(1, OUT_ADDR, false, false);
    let mut rng = StdRng::seed_from_u64(5);
    // A genuine i-HA reply with TNC to the same node, 100 s older.
    let genuine = {
        let mut r2 = Rig::new(cfg());
        r2.attach(1, IN_ADDR, true, false);
        r2.iha_replies[0].clone()
    };
    let from = SocketAddrV4::new(I_HA, 434);
    for k in 0..20_000 {
        let (n, w) = (r.now, r.wall());
        let p: Vec<u8> = if k % 2 == 0 {
            let len = rng.gen_range(0..80);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut p = genuine[..rng.gen_range(0..=genuine.len())].to_vec();
            if !p.is_empty() {
                let at = rng.gen_range(0..p.len());
                p[at] ^= rng.gen::<u8>();
            }
            p
        };
        let via = if rng.gen() { Via::Plain } else { Via::Vpn };
        r.node
            .handle_datagram(n, w, rng.gen_range(0..3), via, from, &p);
        r.pump();
        assert!(!matches!(r.gate(1), Gate::OpenInside(_)));
    }
}

/// The binding falls silent just after the client's own renewal (80 % of a short
/// lifetime) went out with no answer: no second request is sent, and the renewal's
/// answer, once the i-HA is back, reopens the gate as a probe's would (it used to
/// reopen nothing: closed until T_MONITOR).
#[test]
fn silence_during_a_renewal_is_answered_by_the_renewal() {
    let mut c = cfg();
    c.lifetime = 4;
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    let sent = r.sent_to(1, I_HA);
    // The i-HA goes away; the renewal leaves at 80 % of the lifetime, unanswered.
    r.reach.insert(1, (false, false));
    r.advance(Duration::from_millis(3300));
    assert_eq!(r.sent_to(1, I_HA), sent + 1, "the renewal");
    assert!(r.node.gate_open_until(1, r.now).is_some());
    let (n, w) = (r.now, r.wall());
    r.node.handle_binding_silent(n, w, 1);
    assert_eq!(
        r.gate(1),
        Gate::Closed,
        "closed while the binding is in doubt"
    );
    assert_eq!(r.node.stats().silence_probes, 0, "the renewal is the probe");
    // Back: the renewal's retransmission is answered and proves the link again.
    r.reach.insert(1, (true, false));
    r.advance(Duration::from_secs(3));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert!(r.node.proof(1).unwrap().at() > n, "a fresh proof");
}
