//! Recvs that let the IOCP port choose their memory (a buffer of capacity 0).

use super::*;

/// Post a recv with port-chosen memory on `socket`.
fn chosen_recv(port: &mut Front<Iocp>, token: Token, socket: &TcpStream) {
    port.submit(
        token,
        Op::Recv {
            socket: raw(socket),
            buf: Vec::new(),
        },
    );
}

#[test]
fn a_chosen_recv_at_end_of_stream_is_zero_with_an_empty_vec() {
    let mut port = port();
    let (client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 1, &server);
    assert_nothing_ready(&mut port);
    client.shutdown(Shutdown::Write).unwrap();
    let (buf, result) = received(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(result.unwrap(), 0);
    assert_eq!(buf.capacity(), 0);
    assert_eq!(
        port.driver().pool.len(),
        1,
        "the unused buffer went back to the pool"
    );
}

#[test]
fn cancel_of_a_pending_chosen_recv_returns_an_empty_vec() {
    let mut port = port();
    let (_client, server) = registered_pair(&mut port);
    chosen_recv(&mut port, 5, &server);
    assert_nothing_ready(&mut port);
    port.cancel(raw(&server));
    let completion = wait_for(&mut port, 1).pop().unwrap();
    assert_eq!(completion.token, 5);
    let (buf, result) = received(completion);
    assert!(result.is_err(), "expected an error, got {:?}", result);
    assert_eq!(buf.capacity(), 0);
    assert_eq!(port.in_flight(), 0);
    assert_eq!(port.driver().pool.len(), 1);
}

#[test]
fn many_chosen_recvs_each_get_their_own_bytes() {
    const N: usize = 100;
    let mut port = port();
    let mut pairs = Vec::new();
    for token in 0..N {
        let (client, server) = registered_pair(&mut port);
        chosen_recv(&mut port, token as Token, &server);
        pairs.push((client, server));
    }
    assert_nothing_ready(&mut port);
    assert_eq!(port.in_flight(), N);
    for (i, (client, _)) in pairs.iter_mut().enumerate() {
        client.write_all(format!("m{}", i).as_bytes()).unwrap();
    }
    let mut seen = vec![false; N];
    for completion in wait_for(&mut port, N) {
        let token = completion.token as usize;
        let (buf, result) = received(completion);
        assert_eq!(result.unwrap(), buf.len());
        assert_eq!(buf, format!("m{}", token).as_bytes());
        assert!(!seen[token]);
        seen[token] = true;
        port.give_buffer(buf);
    }
    assert_eq!(port.in_flight(), 0);
    assert_eq!(port.driver().pool.len(), N);
}

#[test]
fn given_buffers_are_reused() {
    let mut port = port();
    let (mut client, server) = registered_pair(&mut port);
    client.write_all(b"one").unwrap();
    chosen_recv(&mut port, 1, &server);
    let (first, _) = received(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(first, b"one");
    let address = first.as_ptr();
    port.give_buffer(first);
    client.write_all(b"two").unwrap();
    chosen_recv(&mut port, 2, &server);
    let (second, _) = received(wait_for(&mut port, 1).pop().unwrap());
    assert_eq!(second, b"two");
    assert_eq!(
        second.as_ptr(),
        address,
        "a new buffer instead of the given one"
    );
}
