//! Drover
