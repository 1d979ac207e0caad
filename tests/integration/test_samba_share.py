"""What the shipped Samba configuration (dist/samba/smb.conf) promises on top of
inboxfs (R14; R1 for SMB1 clients; README "Deploying on an inbox server"):
the clients' share tells no connection what another one creates (no change
notifications) and grants no oplock, lease or durable handle (a cached
close would delay publication and make the client's next create-new of the
same name collide); SMB1 clients, admitted with the shipped lines, drop
colliding messages without loss; the consumer's share on the real
directory deletes and is notified of the stored names. Everything is
checked in the BACKING inbox, by content."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

import helpers
from helpers import (SMB_SHARE, STATUS_SUCCESS, TIMEOUT, inbox_contents, nt_status_name,
                     staged, wait_until)

s3 = pytest.importorskip('impacket.smb3structs')
from impacket.smbconnection import SMB_DIALECT, SessionError  # noqa: E402

STATUS_PENDING = 0x00000103
NOTIFY_ALL = (s3.FILE_NOTIFY_CHANGE_FILE_NAME | s3.FILE_NOTIFY_CHANGE_DIR_NAME
              | s3.FILE_NOTIFY_CHANGE_SIZE | s3.FILE_NOTIFY_CHANGE_LAST_WRITE
              | s3.FILE_NOTIFY_CHANGE_CREATION)
SECRET = 'confidential-merger-acme.txt'


# ------------------------------------------------------------- raw SMB2

def _context(name, data):
    """One SMB2 create context: name at 16, data 8-aligned after it."""
    ctx = s3.SMB2CreateContext()
    ctx['NameOffset'] = 16
    ctx['NameLength'] = len(name)
    ctx['DataOffset'] = 24
    ctx['DataLength'] = len(data)
    ctx['Buffer'] = name + b'\0' * (8 - len(name)) + data
    return ctx


def _chain(contexts):
    """Link contexts: each Next is the 8-aligned offset of the next one."""
    out = b''
    for i, ctx in enumerate(contexts):
        blob = ctx.getData()
        if i + 1 < len(contexts):
            blob += b'\0' * (-len(blob) % 8)
            ctx['Next'] = len(blob)
            blob = ctx.getData() + b'\0' * (-len(ctx.getData()) % 8)
        out += blob
    return out


def _parse_contexts(response):
    """{name: data} of the create contexts of an SMB2 CREATE response."""
    found = {}
    buf = response['Buffer']
    off = 0
    while buf and off < len(buf):
        ctx = s3.SMB2CreateContext(buf[off:])
        name = buf[off + ctx['NameOffset']:off + ctx['NameOffset'] + ctx['NameLength']]
        found[bytes(name)] = bytes(buf[off + ctx['DataOffset']:
                                       off + ctx['DataOffset'] + ctx['DataLength']])
        if not ctx['Next']:
            break
        off += ctx['Next']
    return found


class RawCreate:
    """An SMB2 CREATE whose whole answer is kept (impacket's createFile
    returns only the file id): the granted oplock level and the create
    contexts (lease, durable handle) the server answered with."""

    def __init__(self, conn, name, oplock, contexts=()):
        self.conn = conn
        server = conn.conn.getSMBServer()
        packet = server.SMB_PACKET()
        packet['Command'] = s3.SMB2_CREATE
        packet['TreeID'] = conn.tid
        req = s3.SMB2Create()
        req['SecurityFlags'] = 0
        req['RequestedOplockLevel'] = oplock
        req['ImpersonationLevel'] = s3.SMB2_IL_IMPERSONATION
        req['DesiredAccess'] = (s3.FILE_READ_DATA | s3.FILE_WRITE_DATA
                                | s3.FILE_READ_ATTRIBUTES | s3.FILE_WRITE_ATTRIBUTES)
        req['FileAttributes'] = 0
        req['ShareAccess'] = s3.FILE_SHARE_READ
        req['CreateDisposition'] = s3.FILE_CREATE
        req['CreateOptions'] = s3.FILE_NON_DIRECTORY_FILE
        req['NameLength'] = len(name) * 2
        req['Buffer'] = name.encode('utf-16le')
        if contexts:
            blob = _chain(list(contexts))
            offset = len(s3.SMB2Packet()) + s3.SMB2Create.SIZE + len(req['Buffer'])
            req['Buffer'] += b'\0' * (-offset % 8)
            req['CreateContextsOffset'] = (len(s3.SMB2Packet()) + s3.SMB2Create.SIZE
                                           + len(req['Buffer']))
            req['CreateContextsLength'] = len(blob)
            req['Buffer'] += blob
        else:
            req['CreateContextsOffset'] = 0
            req['CreateContextsLength'] = 0
        packet['Data'] = req
        answer = server.recvSMB(server.sendSMB(packet))
        self.status = answer['Status']
        assert self.status == STATUS_SUCCESS, nt_status_name(self.status)
        self.response = s3.SMB2Create_Response(answer['Data'])
        self.oplock = self.response['OplockLevel']
        self.contexts = _parse_contexts(self.response)

    def write(self, data):
        server = self.conn.conn.getSMBServer()
        packet = server.SMB_PACKET()
        packet['Command'] = s3.SMB2_WRITE
        packet['TreeID'] = self.conn.tid
        req = s3.SMB2Write()
        req['FileID'] = self.response['FileID']
        req['Offset'] = 0
        req['Length'] = len(data)
        req['Buffer'] = data
        packet['Data'] = req
        answer = server.recvSMB(server.sendSMB(packet))
        assert answer['Status'] == STATUS_SUCCESS, nt_status_name(answer['Status'])

    def close(self):
        server = self.conn.conn.getSMBServer()
        packet = server.SMB_PACKET()
        packet['Command'] = s3.SMB2_CLOSE
        packet['TreeID'] = self.conn.tid
        req = s3.SMB2Close()
        req['Flags'] = 0
        req['FileID'] = self.response['FileID']
        packet['Data'] = req
        answer = server.recvSMB(server.sendSMB(packet))
        assert answer['Status'] == STATUS_SUCCESS, nt_status_name(answer['Status'])


def lease_context():
    lease = s3.SMB2_CREATE_REQUEST_LEASE()
    lease['LeaseKey'] = os.urandom(16)
    lease['LeaseState'] = (s3.SMB2_LEASE_READ_CACHING | s3.SMB2_LEASE_HANDLE_CACHING
                           | s3.SMB2_LEASE_WRITE_CACHING)
    lease['LeaseFlags'] = 0
    lease['LeaseDuration'] = 0
    return _context(b'RqLs', lease.getData())


def durable_context():
    return _context(b'DHnQ', s3.SMB2_CREATE_DURABLE_HANDLE_REQUEST().getData())


class Watcher:
    """An SMB2 CHANGE_NOTIFY on a share's root (the whole tree), answered
    in a thread: .result() is what the connection learned within the
    deadline — (status, raw answer bytes), or None for no answer."""

    def __init__(self, conn, share_tid=None):
        self.conn = conn
        tid = conn.tid if share_tid is None else share_tid
        self.fid = conn.conn.createFile(
            tid, '', desiredAccess=s3.FILE_LIST_DIRECTORY | s3.FILE_READ_ATTRIBUTES,
            shareMode=s3.FILE_SHARE_READ | s3.FILE_SHARE_WRITE | s3.FILE_SHARE_DELETE,
            creationOption=s3.FILE_DIRECTORY_FILE, creationDisposition=s3.FILE_OPEN)
        server = conn.conn.getSMBServer()
        packet = server.SMB_PACKET()
        packet['Command'] = s3.SMB2_CHANGE_NOTIFY
        packet['TreeID'] = tid
        req = s3.SMB2ChangeNotify()
        req['Flags'] = s3.SMB2_WATCH_TREE
        req['OutputBufferLength'] = 65535
        req['FileID'] = s3.SMB2_FILEID(self.fid)
        req['CompletionFilter'] = NOTIFY_ALL
        packet['Data'] = req
        self.answer = None
        self.error = None
        message_id = server.sendSMB(packet)
        self.thread = threading.Thread(target=self._receive, args=(server, message_id),
                                       daemon=True)
        self.thread.start()

    def _receive(self, server, message_id):
        try:
            answer = server.recvSMB(message_id)
            self.answer = (answer['Status'], bytes(answer['Data']))
        except Exception as e:  # noqa: B902 - the connection was closed under us
            self.error = e

    def result(self, timeout):
        self.thread.join(timeout)
        return self.answer


def names_in(raw):
    """The file names of FILE_NOTIFY_INFORMATION entries in a notify answer."""
    response = s3.SMB2ChangeNotify_Response(raw)
    buf = response['Buffer']
    names, off = [], 0
    while off < len(buf):
        info = s3.FILE_NOTIFY_INFORMATION(buf[off:])
        names.append(info['FileName'].decode('utf-16le'))
        if not info['NextEntryOffset']:
            break
        off += info['NextEntryOffset']
    return names


@pytest.fixture
def smb(mounted, samba):
    return mounted, samba(mounted.mnt)


# -------------------------------------------- R14: change notifications

def test_a_watcher_on_the_clients_share_learns_no_other_connections_names(smb):
    """R14, no change notifications: with them on, a connection watching the
    share root is told '0001 confidential-merger-acme.txt' the moment another
    connection creates it. The shipped share answers no watch."""
    mount, server = smb
    watcher_conn, writer = server.connect(), server.connect()
    watcher = Watcher(watcher_conn)
    time.sleep(0.5)           # the watch is registered before the create

    assert writer.create_new(SECRET, b'acquisition terms') == STATUS_SUCCESS
    status, fid = writer.create('OPEN-' + SECRET, s3.FILE_CREATE, b'held', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)

    answer = watcher.result(timeout=5)
    writer.close(fid)
    if answer is not None:
        status, raw = answer
        assert status != STATUS_SUCCESS or not any(
            SECRET in name for name in names_in(raw)), \
            f'a watcher learned another connection\'s names: {names_in(raw)}'
        assert SECRET.encode('utf-16le') not in raw
    assert sorted(inbox_contents(mount.inbox)) == sorted([SECRET, 'OPEN-' + SECRET])


# ------------------------------- R14: oplocks, leases, durable handles

def test_no_batch_oplock_and_no_durable_handle_on_the_clients_share(smb):
    """R14, no oplocks, leases or durable handles: a Windows redirector
    holding a batch oplock keeps the handle open after the application's
    close; a durable handle outlives the connection. The share grants
    neither."""
    mount, server = smb
    conn = server.connect()

    create = RawCreate(conn, 'OPLOCK.SVF', s3.SMB2_OPLOCK_LEVEL_BATCH, [durable_context()])
    assert create.oplock == s3.SMB2_OPLOCK_LEVEL_NONE, \
        f'granted oplock level {create.oplock:#x}'
    assert b'DHnQ' not in create.contexts, 'a durable handle was granted'
    create.write(b'cached close')
    create.close()

    assert conn.create_new('OPLOCK.SVF', b'next message') == STATUS_SUCCESS
    assert sorted(inbox_contents(mount.inbox).values()) == [b'cached close',
                                                             b'next message']


def test_no_lease_on_the_clients_share(smb):
    """SMB 2.1+ clients ask for a lease (read-write-handle caching):
    none is granted (no lease context, or one with no caching)."""
    mount, server = smb
    conn = server.connect()

    create = RawCreate(conn, 'LEASE.SVF', s3.SMB2_OPLOCK_LEVEL_LEASE,
                       [lease_context(), durable_context()])
    lease = create.contexts.get(b'RqLs')
    state = s3.SMB2_CREATE_REQUEST_LEASE(lease)['LeaseState'] if lease else 0
    assert create.oplock == s3.SMB2_OPLOCK_LEVEL_NONE and state == 0, \
        f'granted oplock level {create.oplock:#x}, lease state {state:#x}'
    assert b'DHnQ' not in create.contexts, 'a durable handle was granted'
    create.write(b'leased')
    create.close()
    assert inbox_contents(mount.inbox) == {'LEASE.SVF': b'leased'}


# ----------------- README "Deploying on an inbox server": the consumer's share

@pytest.fixture
def deployed(mounted, samba):
    """The recommended layout: the clients' share on the mount, the
    consumer's share on the real inbox, owned by the consumer's account
    and written by the clients' account through its group."""
    consumer = helpers.ensure_system_user(helpers.SMB_CONSUMER_USER)
    force = helpers.ensure_system_user(helpers.SMB_FORCE_USER)
    os.chown(mounted.inbox, consumer.pw_uid, force.pw_gid)
    os.chmod(mounted.inbox, 0o2770)
    return mounted, samba(mounted.mnt, consumer_path=mounted.inbox)


def consumer_connect(server):
    return server.connect(helpers.SMB_CONSUMER_USER, helpers.SMB_CONSUMER_PASSWORD,
                          share=helpers.SMB_CONSUMER_SHARE)


def test_only_the_clients_accounts_may_drop(deployed):
    """README "Deploying on an inbox server": [inbox] names its SMB accounts
    (valid users) and the hosts it admits (hosts allow): the consumer's
    account, valid on its own share, is refused the clients' share, so it
    cannot drop as a client."""
    mount, server = deployed
    with pytest.raises(SessionError) as refused:
        server.connect(helpers.SMB_CONSUMER_USER, helpers.SMB_CONSUMER_PASSWORD)
    assert 'ACCESS_DENIED' in nt_status_name(refused.value.getErrorCode()), refused.value
    assert server.connect().create_new('OK.SVF', b'a client') == STATUS_SUCCESS
    assert consumer_connect(server).listdir() == ['OK.SVF']
    with open(os.path.join(helpers.SOURCE, 'dist', 'samba', 'smb.conf')) as f:
        shipped = dict(re.findall(r'^\[(\w+)\]\n(.*?)(?=^\[|\Z)', f.read(), re.M | re.S))
    for key in ('valid users', 'hosts allow'):
        assert re.search(rf'^\s*{key}\s*=\s*\S', shipped['inbox'], re.M), f'[inbox] has no {key}'


def test_the_consumers_share_sees_stored_names_and_deletes(deployed):
    """The consumer's share: the consumer reads over SMB what was published,
    under the stored names, and deletes what it processed."""
    mount, server = deployed
    a, b = server.connect(), server.connect()
    assert a.create_new('MSG1.SVF', b'first') == STATUS_SUCCESS
    assert b.create_new('MSG1.SVF', b'second') == STATUS_SUCCESS
    stored = sorted(inbox_contents(mount.inbox))
    assert len(stored) == 2 and 'MSG1.SVF' in stored

    consumer = consumer_connect(server)
    assert consumer.listdir() == stored
    assert sorted(consumer.read(n) for n in stored) == [b'first', b'second']
    for name in stored:
        consumer.conn.deleteFile(helpers.SMB_CONSUMER_SHARE, name)
    assert inbox_contents(mount.inbox) == {}


def test_the_consumers_share_is_only_the_consumers(deployed):
    mount, server = deployed
    with pytest.raises(SessionError):
        server.connect(share=helpers.SMB_CONSUMER_SHARE)


def test_the_consumers_notifications_name_the_stored_names(deployed):
    """Its change notifications name what was really published: the
    rewritten name, not the one the client asked for."""
    mount, server = deployed
    with open(os.path.join(mount.inbox, 'MSG1.SVF'), 'wb') as f:
        f.write(b'waiting for the consumer')
    consumer = consumer_connect(server)
    watcher = Watcher(consumer)
    time.sleep(0.5)

    assert server.connect().create_new('MSG1.SVF', b'rewritten') == STATUS_SUCCESS
    [stored] = [n for n in inbox_contents(mount.inbox) if n != 'MSG1.SVF']

    answer = watcher.result(timeout=10)
    assert answer is not None, 'the consumer was not notified'
    status, raw = answer
    assert status == STATUS_SUCCESS, nt_status_name(status)
    assert stored in names_in(raw), names_in(raw)


# ------------------------ requests per SMB drop (docs/benchmarks.md)

# Every FUSE request of an SMB drop (create-new, write 2 KiB, close) on the
# shipped share, per opcode; docs/benchmarks.md "Every request of an SMB
# drop" says who asks for each and why. SETATTR: smbd's write time at
# close only (force create mode = 0100000 spares its chmod after the
# create). GETXATTR: the directory's two POSIX ACLs (smbd's
# check_parent_access_fsp()), and on kernels that still ask for it
# security.capability before the write.
DROP_REQUESTS = {'LOOKUP': 2, 'GETXATTR': 2, 'CREATE': 1, 'SETATTR': 1, 'GETATTR': 1,
                 'WRITE': 1, 'FLUSH': 1, 'RELEASE': 1}
# Asynchronous, batched by the kernel: not a drop's round trips.
NOT_A_DROPS = {'FORGET', 'BATCH_FORGET', 'INTERRUPT'}


def _drop(conn, name, attributes=0):
    """A legacy client's drop: create-new NAME (with ATTRIBUTES), write
    2 KiB, close."""
    fid = conn.conn.createFile(
        conn.tid, name,
        desiredAccess=(s3.FILE_READ_DATA | s3.FILE_WRITE_DATA
                       | s3.FILE_READ_ATTRIBUTES | s3.FILE_WRITE_ATTRIBUTES),
        shareMode=s3.FILE_SHARE_READ, creationOption=s3.FILE_NON_DIRECTORY_FILE,
        creationDisposition=s3.FILE_CREATE, fileAttributes=attributes)
    conn.conn.writeFile(conn.tid, fid, os.urandom(2048))
    conn.conn.closeFile(conn.tid, fid)


def _drop_opcodes(mount, conn, count, tag):
    """{opcode: n} of COUNT drops on CONN (inboxfs -d), once each drop's
    RELEASE (which the kernel sends after close() has returned) is logged."""
    start = len(mount.log())
    for i in range(count):
        _drop(conn, f'{tag}{i:04d}.SVF')

    def ops():
        found = {}
        for op in re.findall(r'opcode: (\w+)', mount.log()[start:]):
            if op not in NOT_A_DROPS:
                found[op] = found.get(op, 0) + 1
        return found if found.get('RELEASE', 0) >= count else None
    return wait_until(ops, what=f'the RELEASE of {count} drops')


@pytest.mark.parametrize('xattr', ['yes', 'no'])
def test_requests_per_smb_drop(mount_inboxfs, samba, xattr):
    """The FUSE requests of an SMB drop are those docs/benchmarks.md
    accounts for, and no more: in particular one SETATTR (the write time
    smbd sets at close), not two (smbd's chmod of every new file to the
    mode it was just created with). Counted as tools/bench counts them:
    the requests of 5 + N drops minus those of 5, over N, on one
    connection, so that what a connection's first request costs cancels.
    With xattr=no (the unit's), no GETXATTR at all: the kernel keeps the
    first one's ENOSYS."""
    mount = mount_inboxfs(debug=True, sync='none', xattr=xattr)
    conn = samba(mount.mnt).connect()
    n = 20
    few = _drop_opcodes(mount, conn, 5, 'A')
    many = _drop_opcodes(mount, conn, 5 + n, 'B')
    per = {op: (many.get(op, 0) - few.get(op, 0)) / n for op in set(few) | set(many)}
    per = {op: v for op, v in sorted(per.items()) if v}
    assert per.get('SETATTR') == 1, f'SETATTR per drop: {per}'
    # Rounded: a stall of over a second (the directory's attribute
    # timeout) costs a GETATTR more in the run, not per drop.
    got = {op: round(v) for op, v in per.items() if round(v)}
    expected = dict(DROP_REQUESTS)
    if got.get('GETXATTR') == 3:     # the kernel asks for security.capability
        expected['GETXATTR'] = 3
    if xattr == 'no':
        del expected['GETXATTR']
    assert got == expected, per
    assert len(inbox_contents(mount.inbox)) == 5 + 5 + n


def test_new_files_keep_the_modes_smbd_gives_them(smb):
    """Without its chmod after the create, smbd's new files still get the
    mode it computes for them: 0644 (create mask 0744), 0444 when created
    with the read-only attribute; a read-only attribute set later still
    takes the write bits away (store dos attributes = no)."""
    mount, server = smb
    conn = server.connect()
    _drop(conn, 'PLAIN.SVF')
    _drop(conn, 'RO.SVF', attributes=s3.FILE_ATTRIBUTE_READONLY)
    status, fid = conn.create('LATER.SVF', s3.FILE_CREATE, b'made read-only', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    info = s3.FILE_BASIC_INFORMATION()
    for field in ('CreationTime', 'LastAccessTime', 'LastWriteTime', 'ChangeTime'):
        info[field] = 0
    info['FileAttributes'] = s3.FILE_ATTRIBUTE_READONLY
    conn.conn.getSMBServer().setInfo(conn.tid, fid, inputBlob=info.getData(),
                                     infoType=s3.SMB2_0_INFO_FILE,
                                     fileInfoClass=s3.SMB2_FILE_BASIC_INFO)
    conn.close(fid)
    modes = {name: os.stat(os.path.join(mount.inbox, name)).st_mode
             for name in ('PLAIN.SVF', 'RO.SVF', 'LATER.SVF')}
    assert {name: oct(mode) for name, mode in modes.items()} == {
        'PLAIN.SVF': oct(0o100644), 'RO.SVF': oct(0o100444),
        'LATER.SVF': oct(0o100444)}


# -------------------------------------------------------- SMB1 clients

def smb1_create_new_storm(server, name, connections):
    """CONNECTIONS SMB1 connections create-new NAME at once (one thread
    each, its own smbd process): (payloads, statuses)."""
    conns = [server.connect(dialect=SMB_DIALECT) for _ in range(connections)]
    for conn in conns:
        assert conn.conn.getDialect() == SMB_DIALECT
    barrier = threading.Barrier(connections, timeout=TIMEOUT * 3)
    payloads = [f'SMB1 client {c} '.encode() + os.urandom(300) for c in range(connections)]
    statuses = [None] * connections

    def run(c):
        barrier.wait()
        statuses[c] = conns[c].create_new(name, payloads[c])

    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 6)
    assert not any(t.is_alive() for t in threads), 'SMB1 clients did not finish in time'
    return payloads, statuses


def test_smb1_clients_colliding_create_new_lose_nothing(mounted, samba):
    """R1 for SMB1: NT1 clients (impacket's SMB1 NT_CREATE_ANDX with
    FILE_CREATE), admitted by the lines dist/samba/smb.conf shows, all create
    one name at once: every message is in the inbox once."""
    server = samba(mounted.mnt, smb1=True)
    payloads, statuses = smb1_create_new_storm(server, 'K3J9QZ1M.SVF', 8)

    assert statuses == [STATUS_SUCCESS] * 8, [nt_status_name(s) for s in statuses]
    found = inbox_contents(mounted.inbox)
    assert sorted(found.values()) == sorted(payloads)
    assert all(n.endswith('.SVF') for n in found) and 'K3J9QZ1M.SVF' in found
    assert staged(mounted.inbox) == []


def test_smb1_control_plain_directory_collides(samba, plain_inbox):
    """The same SMB1 storm over the raw directory loses all but one: the
    SMB1 test can fail."""
    server = samba(plain_inbox, smb1=True)
    _, statuses = smb1_create_new_storm(server, 'K3J9QZ1M.SVF', 8)
    assert statuses.count(STATUS_SUCCESS) == 1
    assert len(inbox_contents(plain_inbox)) == 1


def test_smbclient_nt1_puts_of_one_name_are_all_delivered(mounted, samba, tmp_path):
    """smbclient -m NT1, as an administrator would try an old client."""
    server = samba(mounted.mnt, smb1=True)
    payloads = [os.urandom(200_000) + bytes([i]) for i in range(3)]
    for i, data in enumerate(payloads):
        (tmp_path / f'local{i}').write_bytes(data)
    for i in range(3):
        proc = subprocess.run(
            ['smbclient', f'//127.0.0.1/{SMB_SHARE}', '-p', str(server.port),
             '-U', f'{helpers.SMB_USER}%{helpers.SMB_PASSWORD}', '-m', 'NT1',
             '--option=client min protocol=NT1', '-d', '1',
             '-c', f'put "{tmp_path}/local{i}" MSG00001.SVF'],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT * 3)
        assert proc.returncode == 0 and 'NT_STATUS' not in proc.stdout + proc.stderr, \
            proc.stdout + proc.stderr
    assert sorted(inbox_contents(mounted.inbox).values()) == sorted(payloads)


def test_smb1_is_refused_without_the_shipped_lines(smb):
    """The lines are what admits SMB1: without them NT1 is refused."""
    _, server = smb
    with pytest.raises(Exception):
        server.connect(dialect=SMB_DIALECT)


# ---------- README "Deploying on an inbox server": no fall-through when down

def _unit():
    """dist/inboxfs@.service: {(section, key): [values]} and Exec argvs."""
    import test_install
    with open(os.path.join(helpers.SOURCE, 'dist', 'inboxfs@.service')) as f:
        text = f.read()
    return text, test_install


def _expand(argv, inbox, env):
    out = []
    for arg in argv:
        arg = arg.replace('%f', inbox).replace('$$', '$')
        for key, value in env.items():
            arg = arg.replace('${' + key + '}', value)
        out.append(arg)
    return out


@pytest.mark.parametrize('stop', ['SIGTERM', 'SIGKILL'])
def test_no_fall_through_to_the_real_inbox_while_inboxfs_is_down(samba, stop):
    """README "Deploying on an inbox server": the unit's layout (its
    mountpoint, made by ExecStartPre), the daemon as ExecStart runs it, smbd
    exporting the mountpoint. After the daemon stops (systemctl stop: SIGTERM;
    a crash: SIGKILL, then ExecStopPost), an SMB create on the clients' share
    fails and nothing lands in the inbox; the consumer's share still works."""
    text, unit = _unit()
    settings = unit.unit_settings(text)
    env = dict(v.split('=', 1) for v in settings[('Service', 'Environment')])
    base = helpers.make_base_dir('inboxfs-unit-')
    inbox = os.path.join(base, 'srv', 'inbox')
    os.makedirs(inbox)
    consumer = helpers.ensure_system_user(helpers.SMB_CONSUMER_USER)
    force = helpers.ensure_system_user(helpers.SMB_FORCE_USER)
    os.chown(inbox, consumer.pw_uid, force.pw_gid)
    os.chmod(inbox, 0o2770)
    env = {k: v.replace('%f', inbox) for k, v in env.items()}
    start = _expand(unit.unit_exec(text, 'ExecStart'), inbox, env)
    assert start[1:4] == ['-f', '-o', 'observers=root,xattr=no'], start
    assert start[4] == inbox, start
    mnt = start[5]                       # where the unit mounts
    mount = None
    try:
        if ('Service', 'ExecStartPre') in settings:
            pre = unit.unit_exec(text, 'ExecStartPre', 'inboxfs-mountpoint')
            proc = subprocess.run(_expand(pre, inbox, env),
                                  capture_output=True, text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, proc.stderr
        assert os.path.isdir(mnt)
        mount = helpers.Mount(base, inbox, mnt, {'observers': 'root', 'xattr': 'no'}).start()

        server = samba(mnt, consumer_path=inbox)
        assert server.smb_create_new('UP.SVF', b'while serving') == STATUS_SUCCESS
        assert inbox_contents(inbox) == {'UP.SVF': b'while serving'}

        if stop == 'SIGTERM':
            mount.run.proc.send_signal(signal.SIGTERM)
            assert mount.run.proc.wait(timeout=TIMEOUT) == 0
        else:
            mount.crash()
        stop_post = unit.unit_exec(text, 'ExecStopPost')[1:]
        proc = subprocess.run(_expand(stop_post, inbox, env), capture_output=True,
                              text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: not mount.mounted(), what='the mount to go')

        status = server.smb_create_new('DOWN.SVF', b'while down')
        assert status != STATUS_SUCCESS, 'a create succeeded on the bare mountpoint'
        assert nt_status_name(status) == 'STATUS_ACCESS_DENIED', nt_status_name(status)
        assert inbox_contents(inbox) == {'UP.SVF': b'while serving'}
        assert mnt != inbox and os.listdir(mnt) == []
        st = os.stat(mnt)
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o555)
        # The consumer works while inboxfs is down.
        assert consumer_connect(server).listdir() == ['UP.SVF']
    finally:
        if mount is not None:
            mount.cleanup()
        if not helpers.mounted_under(base):
            shutil.rmtree(base, ignore_errors=True)
