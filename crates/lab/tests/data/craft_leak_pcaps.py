#!/usr/bin/env python3
"""Writes OUT/crafted.pcap (one frame per case, built with scapy, an encoder independent
of the lab's) and OUT/expected.txt (per frame: class, then the case's name), for
tests/leak_classifier.rs. Usage: craft_leak_pcaps.py OUT"""
import sys
from scapy.all import (ARP, BOOTP, DHCP, ICMP, IP, TCP, UDP, Ether, Raw, wrpcap)
from scapy.layers.ipsec import ESP

MN, EVIL, GWMAC = "02:00:00:00:00:50", "02:00:00:00:00:66", "02:00:00:00:00:fe"
COA, GW, XHA, XHOME = "198.51.100.50", "192.0.2.1", "100.64.0.1", "100.64.0.100"
IHA, HOA, CN, TIA = "10.10.0.1", "10.10.0.100", "10.40.0.10", "10.99.0.1"


def e(src=MN):
    return Ether(src=src, dst=GWMAC)


def ike():
    # IKE header: SPIi, SPIr, next payload, version 2.0, IKE_SA_INIT, flags, id, length
    return bytes(8 * [0x11]) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + bytes(4) + (28).to_bytes(4, "big")


def esp(spi=0xC0FFEE01, seq=7):
    return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + bytes(range(48))


def rrq(hoa, ha, coa):
    return bytes([1, 0x02, 0, 30]) + b"".join(bytes(map(int, a.split("."))) for a in (hoa, ha, coa)) + bytes(8)


def rrp(hoa, ha):
    return bytes([3, 0, 0, 30]) + b"".join(bytes(map(int, a.split("."))) for a in (hoa, ha)) + bytes(8)


cases = [
    ("control", "ike sa init", e() / IP(src=COA, dst=GW) / UDP(sport=500, dport=500) / Raw(ike())),
    ("control", "ike on 4500", e() / IP(src=COA, dst=GW) / UDP(sport=4500, dport=4500) / Raw(bytes(4) + ike())),
    ("control", "nat keepalive", e() / IP(src=COA, dst=GW) / UDP(sport=4500, dport=4500) / Raw(b"\xff")),
    ("encrypted", "esp in udp", e() / IP(src=COA, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())),
    ("encrypted", "esp", e() / IP(src=COA, dst=GW) / ESP(spi=0xC0FFEE02, seq=1, data=bytes(40))),
    ("control", "registration with the x-HA", e() / IP(src=COA, dst=XHA) / UDP(sport=434, dport=434) / Raw(rrq(XHOME, XHA, COA))),
    ("control", "x-HA reply", e(GWMAC) / IP(src=XHA, dst=COA) / UDP(sport=434, dport=434) / Raw(rrp(XHOME, XHA))),
    ("LEAK", "registration to the i-HA in the clear", e() / IP(src=COA, dst=IHA) / UDP(sport=434, dport=434) / Raw(rrq(HOA, IHA, COA))),
    ("LEAK", "x-HA registration naming the home address", e() / IP(src=COA, dst=XHA) / UDP(sport=434, dport=434) / Raw(rrq(HOA, XHA, COA))),
    ("control", "icmp echo outside", e() / IP(src=COA, dst="198.51.100.254") / ICMP()),
    ("LEAK", "icmp echo to the CN", e() / IP(src=COA, dst=CN) / ICMP()),
    ("LEAK", "tcp to the CN", e() / IP(src=COA, dst=CN) / TCP(sport=40000, dport=5001, flags="S")),
    ("LEAK", "tcp to an outside host", e() / IP(src=COA, dst="203.0.113.9") / TCP(sport=40000, dport=443, flags="S")),
    ("LEAK", "dns outside", e() / IP(src=COA, dst="198.51.100.254") / UDP(sport=5353, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02cn\x08intranet\x07example\x03com\x00\x00\x01\x00\x01")),
    ("LEAK", "from the TIA in the clear", e() / IP(src=TIA, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())),
    ("encrypted", "ip-in-ip with the x-HA carrying esp in udp", e() / IP(src=COA, dst=XHA) / IP(src=XHOME, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())),
    ("control", "ip-in-ip with the x-HA carrying ike", e() / IP(src=COA, dst=XHA) / IP(src=XHOME, dst=GW) / UDP(sport=4500, dport=4500) / Raw(bytes(4) + ike())),
    ("LEAK", "ip-in-ip with the x-HA hiding plaintext to the CN", e() / IP(src=COA, dst=XHA) / IP(src=XHOME, dst=CN) / UDP(sport=40000, dport=5002) / Raw(b"user data")),
    ("LEAK", "ip-in-ip with the x-HA hiding the home address", e() / IP(src=COA, dst=XHA) / IP(src=HOA, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())),
    ("LEAK", "ip-in-ip not with the x-HA", e() / IP(src=COA, dst=GW) / IP(src=XHOME, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())),
    ("encrypted", "rfc 3519 tunnel data with esp", e() / IP(src=COA, dst=XHA) / UDP(sport=434, dport=434) / Raw(bytes([4, 4, 0, 0]) + bytes(IP(src=XHOME, dst=GW) / UDP(sport=4500, dport=4500) / Raw(esp())))),
    ("LEAK", "rfc 3519 tunnel data hiding plaintext", e() / IP(src=COA, dst=XHA) / UDP(sport=434, dport=434) / Raw(bytes([4, 4, 0, 0]) + bytes(IP(src=XHOME, dst=CN) / ICMP()))),
    ("LEAK", "icmp error quoting an intranet header", e() / IP(src=COA, dst=GW) / ICMP(type=3, code=3) / IP(src=GW, dst=CN) / UDP(sport=1, dport=2)),
    ("control", "arp outside", e() / ARP(op=1, hwsrc=MN, psrc=COA, pdst="198.51.100.254")),
    ("LEAK", "arp for the i-HA", e() / ARP(op=1, hwsrc=MN, psrc=COA, pdst=IHA)),
    ("LEAK", "gratuitous arp for the home address", e() / ARP(op=1, hwsrc=MN, psrc=HOA, pdst=HOA)),
    ("control", "dhcp discover", Ether(src=MN, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex("020000000050")) / DHCP(options=[("message-type", "discover"), "end"])),
    ("LEAK", "dhcp request for the home address", Ether(src=MN, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex("020000000050")) / DHCP(options=[("message-type", "request"), ("requested_addr", HOA), "end"])),
    ("injected", "replayed i-HA reply from the attacker", e(EVIL) / IP(src=IHA, dst=COA) / UDP(sport=434, dport=434) / Raw(rrp(HOA, IHA))),
]

out = sys.argv[1]
wrpcap(f"{out}/crafted.pcap", [c[2] for c in cases])
with open(f"{out}/expected.txt", "w") as f:
    for cls, name, _ in cases:
        f.write(f"{cls}\t{name}\n")
