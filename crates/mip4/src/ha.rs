//! ha
