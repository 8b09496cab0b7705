//! Fuzz target: the PROXY protocol header parser (see `iocp_echo_fuzz::proxy`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iocp_echo_fuzz::proxy::header(data));
