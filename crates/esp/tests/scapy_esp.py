#!/usr/bin/env python3
"""Independent ESP oracle for crates/esp/tests/scapy.rs, using scapy's
scapy.layers.ipsec.SecurityAssociation in tunnel mode.

Reads one JSON document on stdin: {"jobs": [job, ...]} and writes
{"results": [result, ...]} on stdout. A job is

  {"op": "decrypt" | "encrypt",
   "crypt_algo": "AES-GCM" | "CHACHA20-POLY1305" | "AES-CBC",
   "crypt_key": hex (AEAD: key | 4-octet salt), "auth_algo": "NULL" | "HMAC-SHA1-96" |
   "SHA2-256-128", "auth_key": hex, "spi": int, "esn_en": bool, "esn": int (high 32 bits),
   "nat_t": bool,
   "packets": [hex]   decrypt: ESP octets (or the UDP payload when nat_t)
                      encrypt: inner IPv4 packets
   "seq": [int]       encrypt only: low 32 bits of each packet's sequence number}

A decrypt result is {"packets": [{"nh": int, "inner": hex, "padding": hex} |
{"error": str}]}; an encrypt result is {"packets": [hex]} (ESP octets, or the UDP
payload when nat_t). Exits non-zero when scapy is missing.
"""

import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

OUTER = dict(src="192.0.2.10", dst="192.0.2.1")
NAT_T_PORT = 4500


def make_sa(job):
    return SecurityAssociation(
        ESP,
        spi=job["spi"],
        crypt_algo=job["crypt_algo"],
        crypt_key=bytes.fromhex(job["crypt_key"]),
        auth_algo=job["auth_algo"],
        auth_key=bytes.fromhex(job["auth_key"]) if job["auth_key"] else None,
        tunnel_header=IP(**OUTER),
        nat_t_header=UDP(sport=NAT_T_PORT, dport=NAT_T_PORT) if job["nat_t"] else None,
        esn_en=job["esn_en"],
        esn=job["esn"],
    )


def decrypt(job):
    sa = make_sa(job)
    out = []
    for h in job["packets"]:
        data = bytes.fromhex(h)
        if job["nat_t"]:
            outer = IP(**OUTER) / UDP(sport=NAT_T_PORT, dport=NAT_T_PORT) / Raw(data)
        else:
            outer = IP(proto=50, **OUTER) / Raw(data)
        pkt = IP(bytes(outer))
        if not pkt.haslayer(ESP):
            out.append({"error": "scapy did not dissect ESP"})
            continue
        esp = pkt[ESP].copy()
        icv_size = sa.crypt_icv_size or sa.crypt_algo.icv_size or sa.auth_algo.icv_size
        try:
            # Verifies the ICV (verify=True) and strips the tunnel.
            inner = sa.decrypt(pkt, verify=True)
            # The same decryption once more, to report the trailer scapy saw.
            plain = sa.crypt_algo.decrypt(sa, esp, sa.crypt_key, icv_size,
                                          esn_en=sa.esn_en, esn=sa.esn)
        except Exception as e:  # IPSecIntegrityError and friends
            out.append({"error": f"{type(e).__name__}: {e}"})
            continue
        out.append({"nh": int(plain.nh), "inner": bytes(inner).hex(),
                    "padding": bytes(plain.padding).hex()})
    return {"packets": out}


def encrypt(job):
    sa = make_sa(job)
    out = []
    for h, seq in zip(job["packets"], job["seq"]):
        enc = sa.encrypt(IP(bytes.fromhex(h)), seq_num=seq)
        if job["nat_t"]:
            out.append(bytes(enc[UDP].payload).hex())
        else:
            out.append(bytes(enc[ESP]).hex())
    return {"packets": out}


def main():
    req = json.load(sys.stdin)
    results = []
    for job in req["jobs"]:
        results.append(decrypt(job) if job["op"] == "decrypt" else encrypt(job))
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
