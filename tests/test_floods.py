"""Connection floods: past ``max_connections``, and past the process's descriptor limit.

* Connections over ``max_connections`` are closed at once (the client sees the end of
  the stream or a reset within a generous timeout), counted in ``connections_rejected``;
  the connections already open keep being served, and accepting resumes as soon as
  some close.
* A server process whose ``RLIMIT_NOFILE`` is lowered, flooded with more connections
  than it has descriptors: accepting pauses on ``EMFILE`` rather than spinning (its CPU
  time over the saturated period stays small), the server stays up and keeps serving the
  connections it has, and once clients close, the waiting and new connections are served.
"""

from __future__ import annotations

import time

import pytest
from helpers import framed, wait_for, wait_stats
from iocp_echo import Client, Framing, Server
from server_process import controlled, counters_are, cpu_seconds, fd_count

LINES = Framing.lines()


def echo_once(client: Client, text: bytes) -> None:
    """One line and its echo (fails on a wrong echo or a close)."""
    assert client.request(text) == text


def refused(client: Client) -> bool:
    """Whether the server closed ``client`` without a reply (EOF or reset)."""
    try:
        client.request(b"anyone?")
    except ConnectionError:  # ConnectionClosed at the end of the stream, or a reset
        return True
    return False


def flood_past_max_connections(limit: int, extra: int, rounds: int) -> None:
    """``limit`` clients held open, then ``extra`` more at once, ``rounds`` times over,
    freeing a few slots between rounds."""
    with Server(None, port=0, framing="lines", max_connections=limit, workers=2) as srv:
        held = [framed(srv.address, LINES, timeout=10) for _ in range(limit)]
        try:
            for i, client in enumerate(held):
                echo_once(client, b"held %d" % i)
            rejected = 0
            for round_ in range(rounds):
                flood = [framed(srv.address, LINES, timeout=10) for _ in range(extra)]
                started = time.monotonic()
                assert all([refused(client) for client in flood]), "an extra connection got in"
                took = time.monotonic() - started
                for client in flood:
                    client.close()
                rejected += extra
                wait_stats(srv, "the rejections", counters_are(connections_rejected=rejected))
                # Those already in are still served.
                for i, client in enumerate(held):
                    echo_once(client, b"still %d %d" % (round_, i))
                # Free some slots: the same number of newcomers are served.
                freed = 1 + round_ % 3
                for client in held[-freed:]:
                    client.close()
                del held[-freed:]
                wait_stats(srv, "free slots", counters_are(connections_open=len(held)))
                for n in range(freed):
                    newcomer = framed(srv.address, LINES, timeout=10)
                    held.append(newcomer)
                    echo_once(newcomer, b"newcomer %d %d" % (round_, n))
                stats = srv.stats()
                assert stats["connections_open"] == limit
                print(f"\nround {round_}: {extra} refused in {took:.2f} s; {stats}")
            assert srv.stats()["connections_rejected"] == rounds * extra
        finally:
            for client in held:
                client.close()
        wait_stats(srv, "everyone closed", lambda s: s["connections_open"] == 0)


def test_connections_past_max_connections_are_closed_at_once_and_accepting_resumes() -> None:
    flood_past_max_connections(limit=20, extra=50, rounds=3)


@pytest.mark.slow
def test_large_floods_past_max_connections() -> None:
    flood_past_max_connections(limit=500, extra=2000, rounds=5)


SATURATED = 2.0
"""Seconds the descriptor-starved server is watched while connections wait."""


def starve_descriptors(nofile: int, extra: int) -> None:
    """Flood a server limited to ``nofile`` descriptors with enough connections to use
    them all plus ``extra`` waiting in the backlog; watch its CPU; free them; check."""
    with controlled("lines", nofile=nofile, workers=2) as server:
        pid = server.proc.pid
        regular = framed(server.address, LINES, timeout=30)
        echo_once(regular, b"before")
        free = nofile - fd_count(pid)
        clients = [framed(server.address, LINES, timeout=60) for _ in range(free + extra)]
        try:
            server.wait_stats("descriptors to run out", lambda s: s["accept_errors"] > 0)
            wait_for(lambda: fd_count(pid) >= nofile - 1, "the server's descriptors all used")
            # Nothing but the accept loop has work while this runs: it should be asleep.
            errors_before = server.stats()["accept_errors"]
            cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
            time.sleep(SATURATED)
            cpu = cpu_seconds(pid) - cpu_before
            wall = time.monotonic() - wall_before
            stats = server.stats()
            errors = stats["accept_errors"] - errors_before
            print(
                f"\nRLIMIT_NOFILE {nofile}, {len(clients)} clients: {cpu:.2f} CPU s in "
                f"{wall:.2f} s starved, {errors} failed accepts meanwhile; "
                f"open {stats['connections_open']}"
            )
            assert server.proc.poll() is None, "the server died when descriptors ran out"
            assert cpu < 0.1 * wall, f"the accept loop spins: {cpu:.2f} CPU s in {wall:.2f} s"
            # A pause of 100 ms after each failure: its 4 posted accepts fail ~40 times a
            # second (a server that retries at once fails hundreds of times or more).
            assert errors < 100 * wall
            # While starved: the accepted connections and the regular client are served.
            for i, client in enumerate(clients[:10]):
                echo_once(client, b"served while starved %d" % i)
            echo_once(regular, b"while starved")
            # Clients leave: those waiting in the backlog are accepted in turn and served
            # (each leaves after its echo, making room for the next).
            accepted = stats["connections_open"] - 1
            for client in clients[:accepted]:
                client.close()
            for i, client in enumerate(clients[accepted:]):
                echo_once(client, b"waited %d" % i)
                client.close()
            server.wait_stats("the clients gone", lambda s: s["connections_open"] == 1)
            for i in range(3):
                with framed(server.address, LINES, timeout=30) as newcomer:
                    echo_once(newcomer, b"newcomer %d" % i)
            echo_once(regular, b"after")
        finally:
            for client in clients:
                client.close()
            regular.close()
        server.close()


def test_running_out_of_descriptors_pauses_accepting_without_spinning_and_recovers() -> None:
    starve_descriptors(nofile=64, extra=40)


@pytest.mark.slow
def test_a_large_flood_past_the_descriptor_limit() -> None:
    starve_descriptors(nofile=512, extra=800)
