//! Simulator (tests only).
