//! ikev2
