//! Waking, timeouts and batches.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use super::support::{open, raw};
use crate::port::{Backend, CompletionPort, Op, Token, MAX_BATCH};

pub(super) fn wake_from_another_thread_ends_a_blocking_wait(backend: Backend) {
    let mut port = open(backend);
    let waker = port.waker();
    let mut out = Vec::new();
    for _ in 0..3 {
        let waker = waker.clone();
        let started = Instant::now();
        let thread = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        port.wait(&mut out, None).unwrap();
        assert!(out.is_empty());
        assert!(started.elapsed() < Duration::from_secs(10));
        thread.join().unwrap();
    }
}

pub(super) fn wakes_before_a_wait_end_it_at_once_and_are_consumed(backend: Backend) {
    let mut port = open(backend);
    let waker = port.waker();
    for _ in 0..5 {
        waker.wake().unwrap();
    }
    let mut out = Vec::new();
    let started = Instant::now();
    port.wait(&mut out, Some(Duration::from_secs(10))).unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The five wakes were one: the next wait times out.
    let started = Instant::now();
    port.wait(&mut out, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(out.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(90));
}

pub(super) fn a_waker_outlives_its_port(backend: Backend) {
    let port = open(backend);
    let waker = port.waker();
    drop(port);
    waker.wake().unwrap();
}

pub(super) fn a_timeout_returns_nothing_and_is_not_cut_short(backend: Backend) {
    let mut port = open(backend);
    let mut out = Vec::new();
    for timeout in [Duration::from_millis(30), Duration::from_micros(30_400)] {
        let started = Instant::now();
        port.wait(&mut out, Some(timeout)).unwrap();
        assert!(out.is_empty());
        // Rounded up to whole milliseconds where the kernel counts them.
        assert!(
            started.elapsed() >= Duration::from_millis(29),
            "{:?}",
            timeout
        );
    }
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert!(out.is_empty());
    assert_eq!(port.in_flight(), 0);
}

/// Accepts on a socket the port does not know fail at submit: more of them
/// than one wait hands out.
pub(super) fn a_wait_hands_out_at_most_max_batch_completions(backend: Backend) {
    let mut port = open(backend);
    let stranger = TcpListener::bind("127.0.0.1:0").unwrap();
    let total = MAX_BATCH + 10;
    for token in 0..total {
        port.submit(
            token as Token,
            Op::Accept {
                listener: raw(&stranger),
            },
        );
    }
    assert_eq!(port.in_flight(), total);
    let mut out = Vec::new();
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(out.len(), MAX_BATCH);
    assert_eq!(port.in_flight(), 10);
    port.wait(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(out.len(), total);
    assert_eq!(port.in_flight(), 0);
    let tokens: Vec<Token> = out.iter().map(|c| c.token).collect();
    assert_eq!(tokens, (0..total as Token).collect::<Vec<_>>());
}
