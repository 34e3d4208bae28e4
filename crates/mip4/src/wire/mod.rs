//! Mobile IPv4 wire formats.
