//! The conformance suite of the port contract ([`crate::contract`]), written
//! once and run against every backend compiled in: io_uring and epoll on
//! Linux, IOCP on Windows (under Wine in CI).
//!
//! Each property is a function of the [`Backend`] in a child module, driving
//! the public [`Port`](crate::port::Port) over real loopback sockets; the macro
//! below makes one `#[test]` per property and backend, named
//! `conformance::<backend>::<property>`. A backend's own test file keeps
//! only what is peculiar to it, with the helpers of [`support`], which serve
//! any `CompletionPort`. Rust 1.63 code: the suite also builds for Windows.

use crate::port::Backend;

mod accept_connect;
mod cancel_register;
mod chosen;
mod gathered_send;
mod recv_send;
mod shared_send;
pub(crate) mod support;
mod waking;

/// One `#[test]` per listed property, for `$backend`.
macro_rules! tests {
    ($backend:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$module::$test($backend)
            }
        )*
    };
}

/// The whole suite for one backend, in a module named after it.
macro_rules! suite {
    ($name:ident, $backend:expr) => {
        mod $name {
            use super::Backend;

            tests! { $backend;
                waking::wake_from_another_thread_ends_a_blocking_wait,
                waking::wakes_before_a_wait_end_it_at_once_and_are_consumed,
                waking::a_waker_outlives_its_port,
                waking::a_timeout_returns_nothing_and_is_not_cut_short,
                waking::a_wait_hands_out_at_most_max_batch_completions,
                accept_connect::accept_gives_a_nonblocking_uninheritable_socket_and_its_peer,
                accept_connect::connect_to_a_listener_then_send_through_the_port,
                accept_connect::connect_to_a_closed_port_is_refused,
                recv_send::a_waiting_recv_appends_bytes_sent_later,
                recv_send::recv_of_bytes_already_there_then_end_of_stream,
                recv_send::recv_at_end_of_stream_is_zero,
                recv_send::peer_reset_fails_the_waiting_recv,
                recv_send::a_large_send_goes_out_byte_exact_through_partial_sends,
                recv_send::ping_pong_through_many_rounds,
                recv_send::many_connections_each_get_their_own_bytes_and_echo,
                recv_send::a_kernel_error_is_an_error_completion,
                shared_send::a_shared_buffer_sent_to_many_sockets_arrives_byte_exact_on_each,
                gathered_send::a_gathered_send_arrives_in_order_and_comes_back_whole,
                gathered_send::a_gathered_send_resumes_from_inside_any_part,
                gathered_send::a_gather_of_max_gather_parts_arrives_in_order,
                gathered_send::a_large_gathered_send_goes_out_through_partial_sends,
                cancel_register::cancel_of_a_waiting_recv_completes_it_once_with_its_buffer,
                cancel_register::cancel_right_after_submit_still_targets_the_op,
                cancel_register::ops_on_an_unregistered_socket_fail_as_completions,
                cancel_register::registering_twice_is_an_error,
                cancel_register::deregister_forgets_the_socket,
                cancel_register::unusable_buffers_fail_as_completions,
                chosen::a_waiting_chosen_recv_gets_later_data,
                chosen::a_chosen_recv_with_data_waiting_completes,
                chosen::a_chosen_recv_at_end_of_stream_is_zero_with_an_empty_vec,
                chosen::cancel_of_a_waiting_chosen_recv_returns_an_empty_vec,
                chosen::many_chosen_recvs_each_get_their_own_bytes,
                chosen::a_stream_through_chosen_recvs_arrives_whole_and_in_order,
            }
        }
    };
}

#[cfg(target_os = "linux")]
suite!(io_uring, Backend::IoUring);
#[cfg(target_os = "linux")]
suite!(epoll, Backend::Epoll);
#[cfg(windows)]
suite!(iocp, Backend::Iocp);
