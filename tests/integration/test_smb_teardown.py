"""How an SMB connection ends (R6, R14), through a real smbd from the
shipped dist/samba/smb.conf and impacket: a drop is delivered only on its
client's CLOSE. A client that half-closes its connection during its first
drop, logs off or disconnects the tree with the file open gets nothing
delivered (smbd closes the file itself, and that close is no client's);
a CLOSE followed by a LOGOFF delivers once. Several connections with one
ClientGuid (SMB3 multichannel would hand them all to one smbd process, one
inboxfs session) each keep a namespace of their own. Checked in the
BACKING inbox, by content."""

import os
import re
import socket
import threading

import pytest

from helpers import (STATUS_SUCCESS, TIMEOUT, assert_quarantine_accounted, inbox_files,
                     incomplete, nt_status_name, staged, wait_until)

s3 = pytest.importorskip('impacket.smb3structs')
from impacket import smb3  # noqa: E402


def _settled(mount):
    """Wait until no drop is staged: each was published or set aside."""
    wait_until(lambda: staged(mount.inbox, acked=True) == [], timeout=TIMEOUT * 3,
               what='the drops to leave staging')


def _assert_set_aside(mount, data, client_port):
    """DATA is not in the inbox, is in incomplete/ with its log line, and the
    daemon's log names the client's address and port."""
    _settled(mount)
    delivered = {n: len(d) for n, d in inbox_files(mount).items()}
    assert delivered == {}, f'delivered without a CLOSE: {delivered}'
    wait_until(lambda: list(incomplete(mount.inbox).values()) == [data],
               timeout=TIMEOUT, what='the partial drop in incomplete/')
    assert_quarantine_accounted(mount)
    client = f'127.0.0.1:{client_port}'
    assert re.search(rf'quarantined .*client {re.escape(client)}\b', mount.log()), \
        f'no quarantine line names client {client}:\n{mount.log()}'


def _socket(conn):
    server = conn.conn.getSMBServer()
    session = getattr(server, '_NetBIOSSession', None) or server._sess     # SMB2/3, SMB1
    return session.get_socket()


def _client_port(conn):
    return _socket(conn).getsockname()[1]


# ------------------------------------------ 1a: one ClientGuid, many connections

CLIENTS, NAMES = 8, 20


def test_connections_sharing_a_client_guid_keep_their_own_namespaces(mounted, samba,
                                                                     monkeypatch):
    """CLIENTS connections that all send an all-zero ClientGuid (as a widely
    used SMB2 library does) each create the same NAMES names with
    create-new, concurrently. Samba's multichannel would pass every such
    connection to the smbd process already serving that ClientGuid: one
    inboxfs session, whose creates then collide (NAME_COLLISION). The
    shipped configuration turns multichannel off: every message is
    delivered once, intact."""
    orig = smb3.SMB3.negotiateSession

    def zero_client_guid(self, *args, **kw):
        self.ClientGuid = '\0' * 16
        return orig(self, *args, **kw)

    monkeypatch.setattr(smb3.SMB3, 'negotiateSession', zero_client_guid)
    server = samba(mounted.mnt)
    conns = [server.connect() for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS, timeout=TIMEOUT * 3)
    results = [[] for _ in range(CLIENTS)]

    def storm(i):
        start.wait()
        for n in range(NAMES):
            data = f'client {i} message {n} '.encode() * 50
            results[i].append((n, conns[i].create_new(f'DROP{n:02d}.SVF', data)))

    threads = [threading.Thread(target=storm, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 12)
    assert not any(t.is_alive() for t in threads), 'the storm did not end'
    failed = [(i, n, nt_status_name(st)) for i, r in enumerate(results) for n, st in r
              if st != STATUS_SUCCESS]
    assert failed == [] and all(len(r) == NAMES for r in results), \
        f'{len(failed)} of {CLIENTS * NAMES} creates failed: {failed[:10]}'
    _settled(mounted)
    found = sorted(inbox_files(mounted).values())
    want = sorted(f'client {i} message {n} '.encode() * 50
                  for i in range(CLIENTS) for n in range(NAMES))
    assert found == want, f'{len(found)} files in the inbox for {len(want)} messages'


# ------------------------------ 2: the connection half-closed during its first drop

def _create_and_write_compound(conn, name, data):
    """Send SMB2 CREATE (FILE_CREATE) of NAME and a related WRITE of DATA as
    one compound request, without waiting for the answers."""
    c = conn.conn.getSMBServer()
    signing = c._Session['SigningActivated']
    create = c.SMB_PACKET()
    create['Command'] = s3.SMB2_CREATE
    body = s3.SMB2Create()
    body['SecurityFlags'] = 0
    body['RequestedOplockLevel'] = s3.SMB2_OPLOCK_LEVEL_NONE
    body['ImpersonationLevel'] = s3.SMB2_IL_IMPERSONATION
    body['DesiredAccess'] = (s3.FILE_READ_DATA | s3.FILE_WRITE_DATA
                             | s3.FILE_READ_ATTRIBUTES | s3.FILE_WRITE_ATTRIBUTES)
    body['FileAttributes'] = 0
    body['ShareAccess'] = s3.FILE_SHARE_READ
    body['CreateDisposition'] = s3.FILE_CREATE
    body['CreateOptions'] = s3.FILE_NON_DIRECTORY_FILE
    body['NameLength'] = len(name) * 2
    body['Buffer'] = name.encode('utf-16le')
    body['CreateContextsOffset'] = 0
    body['CreateContextsLength'] = 0
    create['Data'] = body
    write = c.SMB_PACKET()
    write['Command'] = s3.SMB2_WRITE
    body = s3.SMB2Write()
    body['FileID'] = b'\xff' * 16                          # the related create's
    body['Length'] = len(data)
    body['Offset'] = 0
    body['WriteChannelInfoOffset'] = 0
    body['Buffer'] = data
    write['Data'] = body
    for packet in (create, write):
        packet['MessageID'] = c._Connection['SequenceWindow']
        c._Connection['SequenceWindow'] += 1
        packet['SessionID'] = c._Session['SessionID']
        packet['TreeID'] = conn.tid
        packet['CreditCharge'] = 1
        packet['CreditRequestResponse'] = 127
    write['Flags'] = s3.SMB2_FLAGS_RELATED_OPERATIONS
    # The create's message is padded to 8 bytes; the padding is part of it
    # (and of its signature).
    pad = -len(create.getData()) % 8
    create['Data']['Buffer'] += b'\0' * pad
    create['NextCommand'] = len(create.getData())
    if signing:
        for packet in (create, write):
            packet['Flags'] |= s3.SMB2_FLAGS_SIGNED
            c.signSMB(packet)
    c._NetBIOSSession.send_packet(create.getData() + write.getData())


@pytest.mark.parametrize('first', ['first drop', 'after a delivered one'])
def test_connection_half_closed_during_a_drop_delivers_nothing(mounted, samba, first):
    """CREATE and a related WRITE of half a message as one compound, then
    shutdown(SHUT_WR), never a CLOSE: the client's FIN may be in before
    smbd's create reaches inboxfs (the socket in CLOSE_WAIT), and smbd's
    own close at the end of the stream must not deliver the half message.
    Legacy clients open one connection per message: every drop is a first
    drop."""
    server = samba(mounted.mnt)
    conn = server.connect()
    port = _client_port(conn)
    if first != 'first drop':
        assert conn.create_new('WHOLE.SVF', b'a whole message') == STATUS_SUCCESS
        _settled(mounted)
    half = b'half of a message\n' * 1000
    _create_and_write_compound(conn, 'HALF.SVF', half)
    sock = _socket(conn)
    sock.shutdown(socket.SHUT_WR)
    # smbd answers, reads the end of the stream and exits, closing the file.
    sock.settimeout(TIMEOUT * 3)
    while sock.recv(65536):
        pass
    sock.close()
    conn.conn = None
    if first != 'first drop':
        assert inbox_files(mounted).pop('WHOLE.SVF') == b'a whole message'
        os.unlink(os.path.join(mounted.inbox, 'WHOLE.SVF'))
    _assert_set_aside(mounted, half, port)


# ------------------------------------------ 3: LOGOFF or TREE_DISCONNECT without CLOSE

def _connect(samba, mount, dialect):
    """A private smbd on MOUNT and a connection to it speaking DIALECT
    (SMB1: with the lines dist/samba/smb.conf shows for SMB1 clients)."""
    if dialect == 'SMB1':
        from impacket import smb
        server = samba(mount.mnt, smb1=True)
        return server, server.connect(dialect=smb.SMB_DIALECT)
    server = samba(mount.mnt)
    return server, server.connect()


@pytest.mark.parametrize('dialect', ['SMB2', 'SMB1'])
@pytest.mark.parametrize('how', ['logoff', 'tree disconnect'])
def test_logoff_or_tree_disconnect_without_close_delivers_nothing(mounted, samba, how, dialect):
    """FILE_CREATE, write part of a message, then LOGOFF (or TREE_DISCONNECT)
    instead of CLOSE, the TCP connection still up: smbd closes the file
    itself (as root), which is no client's CLOSE. SMB1 (LOGOFF_ANDX,
    TREE_DISCONNECT) with the lines dist/samba/smb.conf shows for SMB1 clients."""
    server, conn = _connect(samba, mounted, dialect)
    port = _client_port(conn)
    part = b'part of a message\n' * 1000
    status, fid = conn.create('NOCLOSE.SVF', s3.FILE_CREATE, part, close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    if how == 'logoff':
        conn.conn.logoff()
    else:
        conn.conn.disconnectTree(conn.tid)
    _settled(mounted)          # smbd closed it: the connection is still up
    assert _socket(conn).fileno() >= 0
    _assert_set_aside(mounted, part, port)


@pytest.mark.parametrize('dialect', ['SMB2', 'SMB1'])
def test_close_then_logoff_delivers_once(mounted, samba, dialect):
    """The control: a CLOSE, then LOGOFF, delivers the message once."""
    server, conn = _connect(samba, mounted, dialect)
    data = b'a whole message\n' * 1000
    status, fid = conn.create('CLOSED.SVF', s3.FILE_CREATE, data, close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    conn.close(fid)
    conn.conn.logoff()
    conn.disconnect()
    _settled(mounted)
    assert inbox_files(mounted) == {'CLOSED.SVF': data}
    assert incomplete(mounted.inbox) == {}
