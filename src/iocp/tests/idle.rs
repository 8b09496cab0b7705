//! Idle connections: what a waiting port-chosen recv costs. Prints the memory
//! per idle connection (run with `--nocapture` to see it).

use std::mem;

use super::*;
use crate::conformance::support::{assert_each_gets_its_own_bytes, registered_pair};

/// What `K32GetProcessMemoryInfo` fills (`PROCESS_MEMORY_COUNTERS`).
#[repr(C)]
#[derive(Default)]
struct MemoryCounters {
    cb: u32,
    page_fault_count: u32,
    peak_working_set_size: usize,
    working_set_size: usize,
    quota_peak_paged_pool_usage: usize,
    quota_paged_pool_usage: usize,
    quota_peak_non_paged_pool_usage: usize,
    quota_non_paged_pool_usage: usize,
    pagefile_usage: usize,
    peak_pagefile_usage: usize,
}

#[link(name = "kernel32")]
extern "system" {
    fn K32GetProcessMemoryInfo(process: HANDLE, counters: *mut MemoryCounters, cb: u32) -> i32;
}

/// This process's (working set, private bytes).
fn process_memory() -> (usize, usize) {
    let mut counters = MemoryCounters {
        cb: mem::size_of::<MemoryCounters>() as u32,
        ..MemoryCounters::default()
    };
    // SAFETY: -1 is the current-process pseudo handle; `counters` is a local
    // of the size passed.
    let ok = unsafe { K32GetProcessMemoryInfo(-1, &mut counters, counters.cb) };
    assert!(ok != 0, "{}", io::Error::last_os_error());
    (counters.working_set_size, counters.pagefile_usage)
}

/// 1,000 idle connections, each with a port-chosen recv waiting: the memory
/// they hold, as the bytes of receive buffers held by the port (exact) and as
/// the process's working set and private bytes (what the OS sees).
#[test]
fn idle_connections_memory() {
    const N: usize = 1000;
    let mut port = port();
    let mut pairs: Vec<_> = (0..N).map(|_| registered_pair(&mut port)).collect();
    let (set_before, private_before) = process_memory();
    for (token, (_, server)) in pairs.iter().enumerate() {
        port.submit(
            token as Token,
            Op::Recv {
                socket: raw(server),
                buf: Vec::new(),
            },
        );
    }
    assert_nothing_ready(&mut port);
    let (set_after, private_after) = process_memory();
    let held = port.driver().held_receive_bytes();
    println!(
        "{} idle connections, per connection: receive buffers held {} B \
         (pool: {} spare), working set +{} B, private bytes +{} B",
        N,
        held / N,
        port.driver().pool.len(),
        set_after.saturating_sub(set_before) / N,
        private_after.saturating_sub(private_before) / N,
    );
    assert_each_gets_its_own_bytes(&mut port, &mut pairs);
}
