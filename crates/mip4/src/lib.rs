//! mip4
