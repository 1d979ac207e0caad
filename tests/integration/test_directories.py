"""Directories belong to the inbox (R1, R2, R7): a client cannot create one
(unless client_mkdir=yes), so no client's directory can make another's create
of that name fail, locally or over SMB; a client cannot change any directory's
mode, owner, times or extended attributes, nor remove or rename one; and what a
client can learn of others' publications from the filesystem's counters is kept
small. Checked in the BACKING inbox, by content."""

import errno
import os
import stat

import pytest

from helpers import (CLIENT_UID, SMB_FORCE_USER, STATUS_SUCCESS, create_excl,
                     ensure_system_user, errno_of, inbox_contents, nt_status_name)

OTHER_UID = 60002


def _truncating_create(path, data):
    with open(path, 'wb') as f:
        f.write(data)


# --------------------------------------------------------- mkdir (R1, R7)

def test_a_clients_mkdir_cannot_make_anothers_create_fail(mounted, as_client):
    mnt = mounted.mnt
    first, second = as_client(CLIENT_UID), as_client(OTHER_UID)

    assert first.call(errno_of, os.mkdir, os.path.join(mnt, 'M1.SVF')) == errno.EPERM
    assert first.call(errno_of, os.mkdir, os.path.join(mnt, 'M2.SVF')) == errno.EPERM
    assert not os.path.exists(os.path.join(mounted.inbox, 'M1.SVF'))

    second.call(create_excl, os.path.join(mnt, 'M1.SVF'), b'create-new')
    second.call(_truncating_create, os.path.join(mnt, 'M2.SVF'), b'truncating create')
    assert inbox_contents(mounted.inbox) == {'M1.SVF': b'create-new',
                                             'M2.SVF': b'truncating create'}


def test_a_clients_mkdir_of_a_name_it_cannot_see_reveals_nothing(mounted, client):
    with open(os.path.join(mounted.inbox, 'SECRET.SVF'), 'wb') as f:
        f.write(b'the consumer has not picked this up yet')
    # As for a name that is free: refused, not "exists".
    assert client.call(errno_of, os.mkdir, os.path.join(mounted.mnt, 'SECRET.SVF')) == \
        errno.EPERM
    assert client.call(errno_of, os.mkdir, os.path.join(mounted.mnt, 'FREE.SVF')) == \
        errno.EPERM


def _mkdirs(mnt):
    os.mkdir(os.path.join(mnt, 'legacy'), 0o755)
    return {name: errno_of(os.mkdir, os.path.join(mnt, name))
            for name in ('.inboxfs', '.inboxfs-stats')}


def test_client_mkdir_yes_lets_clients_create_directories(mount_inboxfs, client):
    m = mount_inboxfs(client_mkdir='yes')
    # Never the daemon's own names, listed in no view.
    assert client.call(_mkdirs, m.mnt) == {'.inboxfs': errno.EPERM,
                                           '.inboxfs-stats': errno.EPERM}
    st = os.stat(os.path.join(m.inbox, 'legacy'))
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == CLIENT_UID
    assert not os.path.exists(os.path.join(m.inbox, '.inboxfs-stats'))
    client.call(create_excl, os.path.join(m.mnt, 'legacy', 'IN.SVF'), b'deep')
    assert inbox_contents(m.inbox, 'legacy') == {'IN.SVF': b'deep'}


def test_client_mkdir_option_is_checked(run_inboxfs, tmp_path):
    (tmp_path / 'inbox').mkdir()
    (tmp_path / 'mnt').mkdir()
    proc = run_inboxfs('-f', '-o', 'client_mkdir=maybe', str(tmp_path / 'inbox'),
                       str(tmp_path / 'mnt'))
    assert proc.returncode != 0
    assert 'client_mkdir' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


@pytest.mark.parametrize('disposition', ['FILE_CREATE', 'FILE_OVERWRITE_IF',
                                         'FILE_SUPERSEDE'])
def test_an_smb_mkdir_cannot_make_anothers_create_fail(mounted, samba, disposition):
    s3 = pytest.importorskip('impacket.smb3structs')
    from impacket.smbconnection import SessionError
    server = samba(mounted.mnt)
    a, b = server.connect(), server.connect()

    # smbclient's mkdir, and a raw directory create, both fail.
    proc = server.smbclient('mkdir DIRNAME.SVF')
    assert 'NT_STATUS_' in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    with pytest.raises(SessionError) as e:
        a.conn.createFile(a.tid, 'AS_DIR.SVF', desiredAccess=s3.FILE_READ_ATTRIBUTES,
                          creationOption=s3.FILE_DIRECTORY_FILE,
                          creationDisposition=s3.FILE_CREATE)
    assert e.value.getErrorCode() != STATUS_SUCCESS
    assert sorted(os.listdir(mounted.inbox)) == ['.inboxfs']

    for name in ('DIRNAME.SVF', 'AS_DIR.SVF'):
        status, _ = b.create(name, getattr(s3, disposition), name.encode())
        assert status == STATUS_SUCCESS, f'{name}: {nt_status_name(status)}'
    assert inbox_contents(mounted.inbox) == {'DIRNAME.SVF': b'DIRNAME.SVF',
                                             'AS_DIR.SVF': b'AS_DIR.SVF'}


# -------------------------------------------- directory attributes (R7)

def _attack_directory(path):
    res = {
        'chmod': errno_of(os.chmod, path, 0),
        'chown': errno_of(os.chown, path, os.getuid(), os.getgid()),
        'utime': errno_of(os.utime, path, (0, 0)),
        'touch': errno_of(os.utime, path, None),
        'setxattr': errno_of(os.setxattr, path, 'user.x', b'y'),
        'removexattr': errno_of(os.removexattr, path, 'user.keep'),
    }
    if os.path.basename(path) == 'sub':
        res['rmdir'] = errno_of(os.rmdir, path)
        res['rename'] = errno_of(os.rename, path, path + '2')
    return res


@pytest.mark.parametrize('where', ['root', 'sub'])
def test_clients_cannot_change_a_directory(mounted, as_client, where):
    """Even where the client's account owns the directory (an inbox made
    writable by chown to it, or one it made with client_mkdir=yes)."""
    backing = mounted.inbox if where == 'root' else os.path.join(mounted.inbox, 'sub')
    path = mounted.mnt if where == 'root' else os.path.join(mounted.mnt, 'sub')
    if where == 'sub':
        os.mkdir(backing)
    os.chown(backing, CLIENT_UID, CLIENT_UID)
    os.chmod(backing, 0o1777)
    os.setxattr(backing, 'user.keep', b'1')
    before = os.stat(backing)

    result = as_client(CLIENT_UID).call(_attack_directory, path)

    assert result == {k: errno.EPERM for k in result}, \
        {k: errno.errorcode.get(v, v) for k, v in result.items()}
    after = os.stat(backing)
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns) == \
        (before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns)
    assert os.listxattr(backing) == ['user.keep']
    # Every other client's create there still works.
    as_client(OTHER_UID).call(create_excl, os.path.join(path, 'AFTER.SVF'), b'after')
    assert inbox_contents(backing) == {'AFTER.SVF': b'after'}


def test_an_smb_client_cannot_change_a_directory(mounted, samba):
    s3 = pytest.importorskip('impacket.smb3structs')
    from impacket import smb3
    from impacket.smbconnection import SessionError
    # Owned by the share's account: smbd itself would allow it all.
    account = ensure_system_user(SMB_FORCE_USER)
    os.mkdir(os.path.join(mounted.inbox, 'sub'))
    os.chown(os.path.join(mounted.inbox, 'sub'), account.pw_uid, account.pw_gid)
    os.chmod(os.path.join(mounted.inbox, 'sub'), 0o1777)
    before = os.stat(os.path.join(mounted.inbox, 'sub'))
    server = samba(mounted.mnt)
    for cmd in ('setmode sub +r', 'rmdir sub', 'rename sub other'):
        proc = server.smbclient(cmd)
        assert 'NT_STATUS_' in proc.stdout + proc.stderr, (cmd, proc.stdout + proc.stderr)
    # New times (FILE_BASIC_INFORMATION). smbd's "dos filetimes" (on by
    # default) sets them as root for a user who may write the directory.
    conn = server.connect()
    blob = (1 << 60).to_bytes(8, 'little') * 4 + (0x10).to_bytes(4, 'little') + bytes(4)
    try:
        fid = conn.conn.createFile(conn.tid, 'sub', desiredAccess=s3.FILE_WRITE_ATTRIBUTES,
                                   creationOption=s3.FILE_DIRECTORY_FILE,
                                   creationDisposition=s3.FILE_OPEN)
        try:
            conn.conn.getSMBServer().setInfo(conn.tid, fid, inputBlob=blob,
                                             infoType=s3.SMB2_0_INFO_FILE,
                                             fileInfoClass=s3.SMB2_FILE_BASIC_INFO)
        finally:
            conn.close(fid)
    except (SessionError, smb3.SessionError):
        pass
    after = os.stat(os.path.join(mounted.inbox, 'sub'))
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert sorted(os.listdir(mounted.inbox)) == ['.inboxfs', 'sub']


def test_observers_still_change_directories(mounted):
    path = os.path.join(mounted.mnt, 'sub')
    os.mkdir(path)
    os.chmod(path, 0o700)
    os.utime(path, (1, 1))
    os.setxattr(path, 'user.x', b'y')
    st = os.stat(os.path.join(mounted.inbox, 'sub'))
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime == 1
    os.rmdir(path)
    assert not os.path.exists(os.path.join(mounted.inbox, 'sub'))


# ------------------------------------------------ what counters tell (R2)

def test_a_client_learns_no_file_count_from_statfs(mounted, client):
    for i in range(50):
        with open(os.path.join(mounted.inbox, f'P{i}.SVF'), 'wb') as f:
            f.write(b'x' * 5000)
    sv = client.call(os.statvfs, mounted.mnt)
    assert (sv.f_files, sv.f_ffree, sv.f_favail) == (0, 0, 0)
    # Free space is told in whole MiB: one message is not seen.
    assert (sv.f_bavail * sv.f_frsize) % (1 << 20) == 0
    assert (sv.f_bfree * sv.f_frsize) % (1 << 20) == 0
    assert sv.f_bavail > 0 and sv.f_blocks > 0
    # Observers see the filesystem as it is.
    assert os.statvfs(mounted.mnt).f_files == os.statvfs(mounted.inbox).f_files
