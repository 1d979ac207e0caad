"""The connection tie (issue 11 item 6; DESIGN §3 "Remote clients"): only
an SMB server process's drops are tied to its connection, and inboxfs holds
nothing of anyone's sockets. A local client that has a TCP connection
delivers its drops whether or not the connection is still up, and its
close of that connection reaches the peer. (A torn-down SMB connection
still quarantines its open drop: test_durability.py.) Checked in the BACKING
inbox, by content."""

import os
import socket

from helpers import TIMEOUT, create_excl, inbox_contents


def _connect(port):
    sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
    return sock.detach()


def _drop(path, data):
    create_excl(path, data)
    return True


def test_a_local_clients_tcp_connection_is_neither_held_nor_tied(mounted, client):
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(TIMEOUT)
    session = client.session()
    try:
        fd = session.call(_connect, listener.getsockname()[1])
        peer, _ = listener.accept()
        peer.settimeout(TIMEOUT)
        session.call(_drop, os.path.join(mounted.mnt, 'ONE.SVF'), b'while connected')

        session.close(fd)
        try:
            got = peer.recv(1)
        except socket.timeout:
            got = None
        assert got == b'', 'the client closed its socket but its peer never saw the end'

        # The process's connection ended: its drops are still its own.
        session.call(_drop, os.path.join(mounted.mnt, 'TWO.SVF'), b'after the connection')
        session.call(_drop, os.path.join(mounted.mnt, 'ONE.SVF'), b'same name again')
    finally:
        session.end()
        listener.close()
    found = inbox_contents(mounted.inbox)
    assert sorted(found.values()) == [b'after the connection', b'same name again',
                                      b'while connected']
    assert os.listdir(os.path.join(mounted.inbox, '.inboxfs', 'incomplete')) == []
