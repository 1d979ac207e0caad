"""inboxfs behind a real Samba on loopback (R1, R2, R4): the private smbd of
the `samba` fixture exports the inboxfs MOUNT, SMB users are mapped to a
non-root account (a client: one smbd process per connection, one inboxfs
session), and real SMB clients (smbclient, impacket) drop messages with
create-new. Everything is checked in the BACKING inbox, by content. The
controls run the same traffic against Samba over a plain directory and must
lose messages: the tests can fail."""

import datetime
import os
import subprocess
import threading
import time

import pytest

import helpers
from helpers import (SMB_FORCE_USER, STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS,
                     TIMEOUT, assert_delivered_once, inbox_contents, nt_status_name, staged,
                     wait_until)

s3 = pytest.importorskip('impacket.smb3structs')
from impacket.smbconnection import SessionError  # noqa: E402

STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034

ACCESS = (s3.FILE_READ_DATA | s3.FILE_WRITE_DATA | s3.FILE_READ_ATTRIBUTES
          | s3.FILE_WRITE_ATTRIBUTES | s3.DELETE)


# ------------------------------------------------------------------ helpers

def smb_status(fn, *args, **kw):
    """STATUS_SUCCESS, or the NTSTATUS of the SessionError fn raised."""
    try:
        fn(*args, **kw)
        return STATUS_SUCCESS
    except SessionError as e:
        return e.getErrorCode()


def create_new_storm(server, name, connections, per_connection):
    """CONNECTIONS SMB connections (one thread each, its own connection:
    its own smbd process) start together and each does PER_CONNECTION
    create-new of NAME, write, close. Returns (payloads, statuses)."""
    conns = [server.connect() for _ in range(connections)]
    barrier = threading.Barrier(connections, timeout=TIMEOUT * 3)
    payloads = [[f'conn {c} msg {m} '.encode() + os.urandom(200)
                 for m in range(per_connection)] for c in range(connections)]
    statuses = [[] for _ in range(connections)]
    errors = []

    def run(c):
        try:
            barrier.wait()
            for data in payloads[c]:
                statuses[c].append(conns[c].create_new(name, data))
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT * 12
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), 'SMB clients did not finish in time'
    assert not errors, errors[0]
    return ([p for ps in payloads for p in ps], [s for ss in statuses for s in ss])


def status_summary(statuses):
    counts = {}
    for s in statuses:
        counts[nt_status_name(s)] = counts.get(nt_status_name(s), 0) + 1
    return counts


@pytest.fixture
def smb(mounted, samba):
    """Samba exporting a fresh inboxfs mount: (mount, server)."""
    return mounted, samba(mounted.mnt)


# ------------------------------------------------------------ smbclient

def test_smbclient_put_same_name_twice(smb, tmp_path):
    mount, server = smb
    # Megabytes: smbd writes them from its pool of aio threads.
    first, second, third = (os.urandom(3_000_000) + bytes([i]) for i in range(3))
    for i, data in enumerate((first, second, third)):
        (tmp_path / f'local{i}').write_bytes(data)

    # Two connections, one after the other...
    server.smbclient_put(tmp_path / 'local0', 'Q7WX2K9A.SVF')
    server.smbclient_put(tmp_path / 'local1', 'Q7WX2K9A.SVF')
    # ... and two puts in one session (one smbd process).
    proc = server.smbclient(f'put "{tmp_path}/local2" X.SVF; put "{tmp_path}/local0" X.SVF')
    assert proc.returncode == 0 and 'NT_STATUS' not in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr

    found = inbox_contents(mount.inbox)
    assert sorted(found.values()) == sorted([first, second, third, first])
    assert sum(1 for n in found if n.startswith('Q7WX2K9A')) == 2
    assert sum(1 for n in found if n.startswith('X')) == 2
    assert all(n.endswith('.SVF') for n in found)
    for name in found:
        assert os.stat(os.path.join(mount.inbox, name)).st_uid == \
            helpers.ensure_system_user(SMB_FORCE_USER).pw_uid
    assert staged(mount.inbox) == []


def test_smbd_over_a_mount_without_extended_attributes(mount_inboxfs, samba, tmp_path):
    """xattr=no, as the unit serves the clients' mount: smbd's drops work
    (smbclient's put and list; impacket's create-new, write, rename on
    the open handle, listing and close), with the shipped
    ea support = no, and builds the share's security descriptors from the
    mode bits."""
    mount = mount_inboxfs(xattr='no')
    server = samba(mount.mnt)
    (tmp_path / 'one').write_bytes(b'one')
    (tmp_path / 'two').write_bytes(b'two')
    proc = server.smbclient(f'put "{tmp_path}/one" A.SVF; put "{tmp_path}/two" A.SVF; '
                            f'put "{tmp_path}/one" B.SVF; ls')
    assert proc.returncode == 0 and 'NT_STATUS' not in proc.stdout + proc.stderr, \
        proc.stdout + proc.stderr
    conn = server.connect()
    status, fid = conn.create('~C.TMP', s3.FILE_CREATE, b'three', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    smb_rename(conn, fid, 'C.SVF')
    assert conn.listdir() == ['C.SVF']
    conn.close(fid)
    assert server.connect().create_new('C.SVF', b'four') == STATUS_SUCCESS
    found = inbox_contents(mount.inbox)
    assert sorted(found.values()) == [b'four', b'one', b'one', b'three', b'two'], found
    assert {'A.SVF', 'B.SVF', 'C.SVF'} <= set(found), found
    os.mkdir(os.path.join(mount.inbox, 'sub'), 0o755)
    proc = server.smbclient('showacls; ls')
    assert proc.returncode == 0 and 'FILENAME:sub' in proc.stdout and 'SID:' in proc.stdout, \
        proc.stdout + proc.stderr
    assert 'xattr=no' in mount.log()


# ------------------------------------------------------- create-new (R1)

@pytest.mark.parametrize('case_sensitive', ['yes', 'no'])
def test_concurrent_create_new_from_8_connections(mounted, samba, case_sensitive):
    """On a case-insensitive share smbd scans the directory before it
    creates: the private readdir must not show it the others' drops."""
    server = samba(mounted.mnt, case_sensitive=case_sensitive)
    payloads, statuses = create_new_storm(server, 'K3J9QZ1M.SVF', 8, 1)

    assert statuses == [STATUS_SUCCESS] * 8, status_summary(statuses)
    assert_delivered_once(mounted.inbox, payloads, ext='.SVF')
    assert staged(mounted.inbox) == []


def test_create_new_storm_16_connections_50_each(smb):
    """R1 over SMB: 800 create-new of one name, 0 collisions."""
    mount, server = smb
    payloads, statuses = create_new_storm(server, 'STORM.SVF', 16, 50)

    assert status_summary(statuses) == {nt_status_name(STATUS_SUCCESS): 800}
    assert_delivered_once(mount.inbox, payloads, ext='.SVF')


def test_rewrite_lines_name_the_client_connection(smb):
    """R10: after a storm through Samba, every rewrite line names its
    client: the address and port of its SMB connection (not smbd's own)."""
    import re
    mount, server = smb
    payloads, statuses = create_new_storm(server, 'WHO.SVF', 4, 10)
    assert status_summary(statuses) == {nt_status_name(STATUS_SUCCESS): 40}
    assert_delivered_once(mount.inbox, payloads, ext='.SVF')
    lines = [l for l in mount.log().splitlines() if 'rewrite:' in l]
    assert len(lines) == 39, lines
    ports = set()
    for line in lines:
        m = re.search(r'\(client 127\.0\.0\.1:(\d+), pid \d+, uid \d+\)', line)
        assert m, line
        ports.add(int(m[1]))
    assert server.port not in ports
    assert 1 <= len(ports) <= 4, ports


def test_create_new_same_name_in_a_row_on_one_connection(smb):
    mount, server = smb
    conn = server.connect()
    payloads = [f'message {i} '.encode() + os.urandom(100) for i in range(50)]

    statuses = [conn.create_new('AGAIN.SVF', data) for data in payloads]

    assert statuses == [STATUS_SUCCESS] * 50, status_summary(statuses)
    assert_delivered_once(mount.inbox, payloads, ext='.SVF')
    # Closed drops leave the connection's view: its listing is empty.
    assert conn.listdir() == []


@pytest.mark.parametrize('disposition', ['FILE_OVERWRITE_IF', 'FILE_SUPERSEDE',
                                         'FILE_OPEN_IF', 'FILE_CREATE'])
def test_creating_dispositions_never_touch_an_existing_file(smb, disposition):
    mount, server = smb
    old = os.path.join(mount.inbox, 'EXIST.SVF')
    with open(old, 'wb') as f:
        f.write(b'the consumer has not picked this up yet')
    before = os.stat(old)
    conn = server.connect()

    status, _ = conn.create('EXIST.SVF', getattr(s3, disposition), b'new payload')

    assert status == STATUS_SUCCESS, nt_status_name(status)
    found = inbox_contents(mount.inbox)
    assert found.pop('EXIST.SVF') == b'the consumer has not picked this up yet'
    after = os.stat(old)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == \
        (before.st_ino, before.st_mtime_ns, before.st_size)
    [(name, data)] = found.items()
    assert data == b'new payload'
    assert name.startswith('EXIST~') and name.endswith('.SVF')


def test_connections_see_only_their_own_open_files(smb):
    """R2 over SMB: open of another connection's file (open or delivered)
    is 'not found', and listings show only the connection's own."""
    mount, server = smb
    a, b = server.connect(), server.connect()
    status, fid = a.create('HELD.SVF', s3.FILE_CREATE, b'held open by a', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    with open(os.path.join(mount.inbox, 'OLD.SVF'), 'wb') as f:
        f.write(b'delivered earlier')
    try:
        assert a.listdir() == ['HELD.SVF']
        assert b.listdir() == []
        for name in ('HELD.SVF', 'OLD.SVF'):
            assert b.create(name, s3.FILE_OPEN)[0] == STATUS_OBJECT_NAME_NOT_FOUND
            assert smb_status(b.read, name) == STATUS_OBJECT_NAME_NOT_FOUND
            assert smb_status(b.conn.deleteFile, helpers.SMB_SHARE, name) == \
                STATUS_OBJECT_NAME_NOT_FOUND
        assert mount.backing_files() == ['OLD.SVF']
    finally:
        a.close(fid)
    assert inbox_contents(mount.inbox) == {'HELD.SVF': b'held open by a',
                                           'OLD.SVF': b'delivered earlier'}


# --------------------------------------- Samba's bookkeeping on drops

def test_delete_on_close_delivers_nothing(smb):
    mount, server = smb
    conn = server.connect()
    fid = conn.conn.createFile(
        conn.tid, 'DOC.SVF', desiredAccess=ACCESS, shareMode=s3.FILE_SHARE_READ,
        creationOption=s3.FILE_NON_DIRECTORY_FILE | s3.FILE_DELETE_ON_CLOSE,
        creationDisposition=s3.FILE_CREATE)
    conn.conn.writeFile(conn.tid, fid, b'scratch data')
    assert staged(mount.inbox)
    conn.close(fid)

    wait_until(lambda: staged(mount.inbox) == [], what='the deleted drop to leave staging')
    assert mount.backing_files() == []
    assert os.listdir(os.path.join(mount.inbox, '.inboxfs', 'incomplete')) == []
    # The name is free again.
    assert conn.create_new('DOC.SVF', b'kept') == STATUS_SUCCESS
    assert inbox_contents(mount.inbox) == {'DOC.SVF': b'kept'}


def test_delete_pending_by_set_info_delivers_nothing(smb):
    mount, server = smb
    conn = server.connect()
    status, fid = conn.create('PEND.SVF', s3.FILE_CREATE, b'to be deleted', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    conn.conn.getSMBServer().setInfo(conn.tid, fid, inputBlob=b'\x01',
                                     infoType=s3.SMB2_0_INFO_FILE,
                                     fileInfoClass=s3.SMB2_FILE_DISPOSITION_INFO)
    conn.close(fid)

    wait_until(lambda: staged(mount.inbox) == [], what='the deleted drop to leave staging')
    assert mount.backing_files() == []


def smb_rename(conn, fid, new_name, replace=False):
    info = s3.FILE_RENAME_INFORMATION_TYPE_2()
    info['ReplaceIfExists'] = int(replace)
    info['RootDirectory'] = 0
    info['FileNameLength'] = len(new_name) * 2
    info['FileName'] = new_name.encode('utf-16le')
    conn.conn.getSMBServer().setInfo(conn.tid, fid, inputBlob=info.getData(),
                                     infoType=s3.SMB2_0_INFO_FILE,
                                     fileInfoClass=s3.SMB2_FILE_RENAME_INFO)


def test_rename_of_an_open_drop(smb):
    """A Windows copy engine writes a temporary name and renames it on the
    open handle before closing."""
    mount, server = smb
    with open(os.path.join(mount.inbox, 'TAKEN.SVF'), 'wb') as f:
        f.write(b'the consumer\'s')
    conn = server.connect()

    for tmp, final, data, inbox_before in (
            ('~COPY1.TMP', 'FINAL.SVF', b'first copy', ['TAKEN.SVF']),
            ('~COPY2.TMP', 'TAKEN.SVF', b'second copy', ['FINAL.SVF', 'TAKEN.SVF'])):
        status, fid = conn.create(tmp, s3.FILE_CREATE, data, close=False)
        assert status == STATUS_SUCCESS, nt_status_name(status)
        smb_rename(conn, fid, final)
        assert conn.listdir() == [final]
        assert mount.backing_files() == inbox_before     # nothing before the close
        conn.close(fid)

    found = inbox_contents(mount.inbox)
    assert found.pop('FINAL.SVF') == b'first copy'
    assert found.pop('TAKEN.SVF') == b'the consumer\'s'
    [(name, data)] = found.items()
    assert data == b'second copy' and name.startswith('TAKEN~') and name.endswith('.SVF')
    assert not any(n.endswith('.TMP') for n in os.listdir(mount.inbox))


def filetime(dt):
    return int((dt - datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc))
               .total_seconds() * 10_000_000)


@pytest.mark.parametrize('store', ['no', 'yes'])
def test_timestamps_and_dos_attributes_set_over_smb(mounted, samba, store):
    """Times set over SMB reach the stored file. DOS attributes: the shipped
    smb.conf does not store them (no user.DOSATTRIB round trips per drop);
    with store dos attributes = yes they pass through as the xattr."""
    mount, server = mounted, samba(mounted.mnt, store_dos_attributes=store)
    conn = server.connect()
    when = datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)
    status, fid = conn.create('STAMP.SVF', s3.FILE_CREATE, b'stamped', close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)

    info = s3.FILE_BASIC_INFORMATION()
    info['CreationTime'] = filetime(when)
    info['LastAccessTime'] = filetime(when)
    info['LastWriteTime'] = filetime(when)
    info['ChangeTime'] = 0
    info['FileAttributes'] = s3.FILE_ATTRIBUTE_HIDDEN | s3.FILE_ATTRIBUTE_ARCHIVE
    conn.conn.getSMBServer().setInfo(conn.tid, fid, inputBlob=info.getData(),
                                     infoType=s3.SMB2_0_INFO_FILE,
                                     fileInfoClass=s3.SMB2_FILE_BASIC_INFO)
    conn.close(fid)

    stored = os.path.join(mount.inbox, 'STAMP.SVF')
    with open(stored, 'rb') as f:
        assert f.read() == b'stamped'
    assert int(os.stat(stored).st_mtime) == int(when.timestamp())
    if store == 'yes':
        assert os.getxattr(stored, 'user.DOSATTRIB'), 'smbd stored no DOS attributes'
    else:
        assert 'user.DOSATTRIB' not in os.listxattr(stored)
    # The mode bits were not used as a fallback (map archive = no).
    assert os.stat(stored).st_mode & 0o111 == 0


def _security_descriptors(server):
    """smbclient's 'showacls; ls' of the share root: each entry's security
    descriptor as smbd builds it (times and free space left out)."""
    proc = server.smbclient('showacls; ls')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines()
            if not line.startswith('MTIME:') and 'blocks available' not in line]


def test_security_descriptors_as_over_the_raw_directory(mounted, samba, plain_inbox):
    """A directory without an ACL reads as 'ACLs not supported' through
    inboxfs (so ls -l asks once); smbd then builds its security descriptor
    from the mode bits, the same as over the raw directory. A directory with
    an ACL and a default ACL reads the same both ways too."""
    for inbox in (mounted.inbox, plain_inbox):
        for name in ('plain', 'acl'):
            os.mkdir(os.path.join(inbox, name))
            os.chmod(os.path.join(inbox, name), 0o755)
        acl = os.path.join(inbox, 'acl')
        for spec in (['-m', 'u:60100:rx'], ['-d', '-m', 'u:60100:rwx']):
            proc = subprocess.run(['setfacl', *spec, acl], capture_output=True, text=True,
                                  timeout=TIMEOUT)
            if proc.returncode != 0 and 'not supported' in proc.stderr:
                pytest.skip('the backing filesystem has no POSIX ACLs here')
            assert proc.returncode == 0, proc.stderr
    over_inboxfs = _security_descriptors(samba(mounted.mnt))
    over_raw = _security_descriptors(samba(plain_inbox))
    names = sorted(line for line in over_inboxfs if line.startswith('FILENAME:'))
    assert names == ['FILENAME:acl', 'FILENAME:plain'], over_inboxfs
    assert sum('SID: S-1-22-1-60100' in line for line in over_inboxfs) >= 1, over_inboxfs
    assert over_inboxfs == over_raw


# ---------------------------------------------------- controls (plain dir)

def test_control_plain_directory_loses_concurrent_creates(samba, plain_inbox):
    """The same 8 concurrent create-new against Samba over the raw
    directory: only one message survives, the rest collide."""
    server = samba(plain_inbox)
    payloads, statuses = create_new_storm(server, 'K3J9QZ1M.SVF', 8, 1)

    summary = status_summary(statuses)
    assert summary == {nt_status_name(STATUS_SUCCESS): 1,
                       nt_status_name(STATUS_OBJECT_NAME_COLLISION): 7}, summary
    found = inbox_contents(plain_inbox)
    assert list(found) == ['K3J9QZ1M.SVF'] and found['K3J9QZ1M.SVF'] in payloads


def test_control_plain_directory_storm_collides(samba, plain_inbox):
    server = samba(plain_inbox)
    payloads, statuses = create_new_storm(server, 'STORM.SVF', 16, 50)

    summary = status_summary(statuses)
    assert summary == {nt_status_name(STATUS_SUCCESS): 1,
                       nt_status_name(STATUS_OBJECT_NAME_COLLISION): 799}, summary
    assert len(inbox_contents(plain_inbox)) == 1


def test_control_plain_directory_same_connection_collides(samba, plain_inbox):
    server = samba(plain_inbox)
    conn = server.connect()
    assert conn.create_new('AGAIN.SVF', b'1') == STATUS_SUCCESS
    assert conn.create_new('AGAIN.SVF', b'2') == STATUS_OBJECT_NAME_COLLISION


# ------------------------ R2: several SMB sessions on one connection

SECOND_USER = 'inboxtest2'


def _two_users_one_connection(mounted, samba, **share_options):
    """A private smbd over the mount and one connection carrying two SMB
    sessions, of SMB_USER and SECOND_USER (a terminal server's users)."""
    server = samba(mounted.mnt, valid_users=f'{helpers.SMB_USER} {SECOND_USER}',
                   **share_options)
    helpers.ensure_system_user(SECOND_USER)
    server.add_user(SECOND_USER, SECOND_USER)
    return server.connect_sessions([(helpers.SMB_USER, helpers.SMB_PASSWORD),
                                    (SECOND_USER, SECOND_USER)])


def test_two_users_on_one_connection_create_new_one_name_at_once(mounted, samba):
    """Where the share does not force one user, each SMB session of a
    connection runs as its user's uid, and each is an inboxfs session (a
    process and a uid): two users holding one name open at once both
    succeed, and both messages are delivered (red on 6a4ccfe: one session
    per smbd process, the second create-new collided)."""
    conn = _two_users_one_connection(mounted, samba, force_user='', force_group='')
    status_a, fid_a = conn.use(0).create_new('SAME.TXT', b'from the first user')
    status_b, fid_b = conn.use(1).create_new('SAME.TXT', b'from the second user')
    assert (nt_status_name(status_a), nt_status_name(status_b)) == \
        (nt_status_name(STATUS_SUCCESS),) * 2
    assert conn.use(0).close(fid_a) == STATUS_SUCCESS
    assert conn.use(1).close(fid_b) == STATUS_SUCCESS
    delivered = assert_delivered_once(mounted.inbox, [b'from the first user',
                                                      b'from the second user'], ext='.TXT')
    assert 'SAME.TXT' in delivered
    # Each user's file is its own: they were two sessions, not one.
    owners = {os.stat(os.path.join(mounted.inbox, n)).st_uid for n in delivered}
    assert len(owners) == 2


def test_two_users_on_one_connection_under_a_forced_user_are_one_session(mounted, samba):
    """The documented limit (README, Decisions): under the shipped
    `force user`, every SMB session of a connection is one uid in one
    process, so one inboxfs session: a name one user holds open is held
    for the other (create-new collides, as for one client creating it
    twice); nothing is lost that was acknowledged."""
    conn = _two_users_one_connection(mounted, samba)
    status_a, fid_a = conn.use(0).create_new('SAME.TXT', b'from the first user')
    status_b, _ = conn.use(1).create_new('SAME.TXT', b'from the second user')
    assert status_a == STATUS_SUCCESS
    assert status_b == STATUS_OBJECT_NAME_COLLISION, nt_status_name(status_b)
    assert conn.use(0).close(fid_a) == STATUS_SUCCESS
    assert inbox_contents(mounted.inbox) == {'SAME.TXT': b'from the first user'}
    # Closed, the name is free again for either.
    status_b, fid_b = conn.use(1).create_new('SAME.TXT', b'from the second user')
    assert status_b == STATUS_SUCCESS and conn.close(fid_b) == STATUS_SUCCESS
    assert_delivered_once(mounted.inbox, [b'from the first user', b'from the second user'],
                          ext='.TXT')
