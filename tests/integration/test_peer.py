"""The connection tie (R6, R12): only
an SMB server process's drops are tied to its connection, and inboxfs holds
nothing of anyone's sockets. A local client that has a TCP connection
delivers its drops whether or not the connection is still up, and its
close of that connection reaches the peer. (A torn-down SMB connection
still quarantines its open drop: test_durability.py.) Checked in the BACKING
inbox, by content."""

import os
import shutil
import socket
import tempfile

from helpers import TIMEOUT, create_excl, inbox_contents, incomplete, wait_until


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


def test_an_smb_server_whose_connection_cannot_be_found_is_not_local(mounted, client):
    """A process whose executable is named smbd is an SMB server process;
    one whose client's connection cannot be found (this one has none) is
    never taken for a local process: its close fails, nothing is
    delivered, the drop is quarantined and the log says why. (cp, copied
    under the name smbd, reports a failed close of its output.)"""
    bindir = tempfile.mkdtemp(prefix='inboxfs-smbd-')
    try:
        os.chmod(bindir, 0o755)
        smbd = os.path.join(bindir, 'smbd')
        shutil.copy2(shutil.which('cp'), smbd)
        source = os.path.join(bindir, 'message')
        with open(source, 'wb') as f:
            f.write(b'from an smbd without a connection')
        os.chmod(source, 0o644)
        proc = client.run([smbd, source, f'{mounted.mnt}/NOCONN.SVF'])
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    assert proc.returncode != 0, 'the close of a drop nobody can vouch for succeeded'
    assert b'close' in proc.stderr, proc.stderr
    assert inbox_contents(mounted.inbox) == {}
    # Quarantined at the release, which the kernel sends after the close
    # returned, without waiting for its answer.
    wait_until(lambda: list(incomplete(mounted.inbox).values()) ==
               [b'from an smbd without a connection'], what='the drop quarantined')
    assert 'is an SMB server, but its client\'s connection cannot be found' in mounted.log()
