//! Fuzz target: the raw decoder against its model (see `iocp_echo_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iocp_echo_fuzz::raw(data));
