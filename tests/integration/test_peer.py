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


IMPOSTOR = r'''
import errno, json, os, socket, sys
sock = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=30)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b'first')
copy = os.dup(fd)
os.close(fd)
try:
    os.write(copy, b' second')
    second = 'written'
except OSError as e:
    second = errno.errorcode[e.errno]
os.close(copy)
print(json.dumps({'second': second}))
'''


def test_an_impostor_named_smbd_ends_its_own_drop_at_its_first_close(mounted, client):
    """An SMB drop's last close is its client's CLOSE: smbd's descriptor
    table is not scanned for a duplicate (README "Which close is the
    last"). A local program named smbd, with a TCP connection, that
    duplicates its descriptor and closes one copy has its drop delivered
    at that close, with what it wrote by then, exactly once; its write
    through the other copy fails with EBADF, and nothing else reaches the
    message. (A program not named smbd keeps writing: test_lifecycle.py,
    test_dup_in_one_process_is_one_message.)"""
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(TIMEOUT)
    bindir = tempfile.mkdtemp(prefix='inboxfs-smbd-')
    try:
        os.chmod(bindir, 0o755)
        smbd = os.path.join(bindir, 'smbd')
        shutil.copy2(os.path.realpath('/usr/bin/python3'), smbd)
        proc = client.run([smbd, '-c', IMPOSTOR, str(listener.getsockname()[1]),
                           f'{mounted.mnt}/IMPOSTOR.SVF'])
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
        listener.close()
    assert proc.returncode == 0, proc.stderr
    assert b'"second": "EBADF"' in proc.stdout, proc.stdout
    assert list(inbox_contents(mounted.inbox).values()) == [b'first']
