//! vpnc
