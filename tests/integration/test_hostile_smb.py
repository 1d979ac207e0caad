"""A hostile client against other clients' messages (R1, R2, R3), over SMB and
through the mount: other names in case variants, streams (`name:x`, `::$DATA`),
8.3 names, `..\\`, file ids, wildcard listings, rename with replace, supersede
and overwrite-if on foreign names, and /proc/PID/fd of another process of the
same uid. Each attempt must neither reach nor harm another's message, nor tell
its name. Checked in the BACKING inbox, by content."""

import errno
import os
import re

import pytest

from helpers import (STATUS_SUCCESS, create_excl, errno_of, inbox_contents,
                     nt_status_name)

s3 = pytest.importorskip('impacket.smb3structs')
from impacket import smb3  # noqa: E402
from impacket.smbconnection import SessionError  # noqa: E402

SECRET = 'confidential-merger-acme.txt'     # the consumer's, not yet picked up
SECRET_DATA = b'the consumer has not picked this up yet'
HELD = 'HELD-BY-A.SVF'                      # held open by connection a
HELD_DATA = b'held open by a'


def status_of(fn, *args, **kw):
    try:
        fn(*args, **kw)
        return STATUS_SUCCESS
    except (SessionError, smb3.SessionError) as e:
        return e.getErrorCode()


@pytest.fixture(params=['yes', 'no'], ids=['case-sensitive', 'case-insensitive'])
def scene(request, mounted, samba):
    """The share (case-sensitive as shipped, and not), a delivered message
    of the consumer's, connection a holding a drop open, and connection b:
    the attacker."""
    with open(os.path.join(mounted.inbox, SECRET), 'wb') as f:
        f.write(SECRET_DATA)
    server = samba(mounted.mnt, case_sensitive=request.param)
    a, b = server.connect(), server.connect()
    status, fid = a.create(HELD, s3.FILE_CREATE, HELD_DATA, close=False)
    assert status == STATUS_SUCCESS, nt_status_name(status)
    yield mounted, server, a, b
    a.close(fid)
    found = inbox_contents(mounted.inbox)
    assert found.get(SECRET) == SECRET_DATA, 'the consumer\'s message was changed'
    # Delivered once, intact: under its name, or a unique one if b's drop
    # of that name was published first.
    mine = [n for n, d in found.items() if d == HELD_DATA]
    assert len(mine) == 1 and mine[0].startswith(HELD[:-4]), \
        f'a\'s drop was changed or lost: {sorted(found)}'


def foreign_names():
    """Every spelling of the two foreign names an attacker may try."""
    names = []
    for name in (SECRET, HELD):
        names += [name, name.upper(), name.lower(), name.swapcase(),
                  name + '::$DATA', name + ':x', name + ':x:$DATA',
                  '..\\' + name, 'nosuch\\..\\' + name, '.\\' + name]
    return names


def read_back(conn, name):
    """Open NAME for reading and return its bytes, or the failure status."""
    try:
        fid = conn.conn.openFile(conn.tid, name, desiredAccess=s3.FILE_READ_DATA,
                                 shareMode=s3.FILE_SHARE_READ | s3.FILE_SHARE_WRITE)
    except (SessionError, smb3.SessionError) as e:
        return e.getErrorCode()
    try:
        return conn.conn.readFile(conn.tid, fid, 0, 4096)
    finally:
        conn.close(fid)


def test_foreign_names_cannot_be_opened_read_or_deleted(scene):
    mount, server, a, b = scene
    for name in foreign_names():
        got = read_back(b, name)
        assert not isinstance(got, bytes), f'{name!r} read {got!r}'
        assert status_of(b.conn.deleteFile, 'inbox', name) != STATUS_SUCCESS, name


def test_listings_show_nothing_foreign(scene):
    mount, server, a, b = scene
    for pattern in ('*', '*.*', '*.txt', 'conf*', 'HELD*', '<', '?*', '*~*', SECRET, HELD,
                    SECRET.upper()):
        try:
            names = b.listdir(pattern)
        except (SessionError, smb3.SessionError):
            names = []
        assert names == [], (pattern, names)
    assert a.listdir() == [HELD]


def test_an_8_3_name_reaches_nothing(scene, samba):
    """With 8.3 names on (mangled names = yes, for DOS-era clients), the
    short name Samba makes for the consumer's message (asked over a share
    of the raw inbox, as the consumer would) opens nothing."""
    mount, server, a, b = scene
    proc = samba(mount.inbox, mangled_names='yes').smbclient(f'allinfo {SECRET}')
    [short] = re.findall(r'^altname: (\S+)$', proc.stdout, re.M) or [None]
    assert short and short != SECRET, proc.stdout + proc.stderr
    attacker = samba(mount.mnt, mangled_names='yes').connect()
    for name in (short, short.lower()):
        got = read_back(attacker, name)
        assert not isinstance(got, bytes), f'{name!r} read {got!r}'
        assert status_of(attacker.listdir, name) != STATUS_SUCCESS, name


def test_a_file_id_opens_nothing(scene):
    mount, server, a, b = scene
    ino = os.stat(os.path.join(mount.inbox, SECRET)).st_ino.to_bytes(8, 'little')
    try:
        name = ino.decode('utf-16le')
    except UnicodeDecodeError:
        pytest.skip('inode number is not a valid UTF-16 string for impacket')
    try:
        fid = b.conn.createFile(b.tid, name, desiredAccess=s3.FILE_READ_DATA,
                                shareMode=s3.FILE_SHARE_READ,
                                creationOption=s3.FILE_OPEN_BY_FILE_ID,
                                creationDisposition=s3.FILE_OPEN)
    except (SessionError, smb3.SessionError):
        return
    try:
        assert b.conn.readFile(b.tid, fid, 0, 4096) != SECRET_DATA
    finally:
        b.close(fid)


@pytest.mark.parametrize('disposition', ['FILE_SUPERSEDE', 'FILE_OVERWRITE_IF',
                                         'FILE_OPEN_IF', 'FILE_CREATE'])
def test_creates_over_foreign_names_touch_nothing(scene, disposition):
    mount, server, a, b = scene
    for i, name in enumerate((SECRET, HELD, SECRET.upper())):
        data = f'b#{i} {name}'.encode()
        status, _ = b.create(name, getattr(s3, disposition), data)
        assert status == STATUS_SUCCESS, f'{name!r}: {nt_status_name(status)}'
    # Streams: refused (the shipped share has none) or a drop of b's own;
    # never a way into the foreign file (checked at teardown).
    for name in (SECRET + '::$DATA', SECRET + ':x', HELD + ':x:$DATA'):
        b.create(name, getattr(s3, disposition), b'b#stream')
    assert a.listdir() == [HELD]   # a's view is unchanged
    theirs = [d for d in inbox_contents(mount.inbox).values() if d.startswith(b'b#')]
    assert len([d for d in theirs if d != b'b#stream']) == 3


def test_rename_with_replace_onto_foreign_names(scene):
    mount, server, a, b = scene
    from test_samba import smb_rename
    for i, target in enumerate((SECRET, HELD, SECRET.lower())):
        status, fid = b.create(f'TMP{i}.TMP', s3.FILE_CREATE, f'b renamed {i}'.encode(),
                               close=False)
        assert status == STATUS_SUCCESS, nt_status_name(status)
        try:
            status = status_of(smb_rename, b, fid, target, replace=True)
            assert status == STATUS_SUCCESS, nt_status_name(status)
        finally:
            b.close(fid)
    found = inbox_contents(mount.inbox)
    assert sorted(d for d in found.values() if d.startswith(b'b renamed')) == \
        [b'b renamed 0', b'b renamed 1', b'b renamed 2']


# ------------------------------------------------------ through the mount

def _hold_open(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    return fd


def _dumpable():
    """A process that became the client uid by setuid() is not dumpable,
    so its /proc/PID/fd is root's; one started as that uid is."""
    import ctypes
    return ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)   # PR_SET_DUMPABLE


def _steal(pid, fd):
    """Another process of the same uid, through /proc/PID/fd."""
    link = f'/proc/{pid}/fd/{fd}'
    out = {'readlink': os.readlink(link)}
    out['open_read'] = errno_of(lambda: os.close(os.open(link, os.O_RDONLY)))
    out['open_write'] = errno_of(lambda: os.close(os.open(link, os.O_WRONLY)))
    out['open_trunc'] = errno_of(lambda: os.close(os.open(link, os.O_WRONLY | os.O_TRUNC)))
    out['stat'] = errno_of(os.stat, link)
    return out


def test_proc_fd_of_another_process_of_the_same_uid(mounted, client):
    holder = client.session()
    try:
        assert holder.call(_dumpable) == 0
        fd = holder.call(_hold_open, os.path.join(mounted.mnt, 'MINE.SVF'), b'mine alone')
        got = client.call(_steal, holder.pid, fd)
        assert got['open_read'] == errno.ENOENT, got
        assert got['open_write'] == errno.ENOENT, got
        assert got['open_trunc'] == errno.ENOENT, got
        holder.close(fd)
    finally:
        holder.end()
    assert inbox_contents(mounted.inbox) == {'MINE.SVF': b'mine alone'}


def _probe_names(mnt, names):
    out = {}
    for name in names:
        path = os.path.join(mnt, name)
        out[name] = (errno_of(os.stat, path), errno_of(os.open, path, os.O_RDONLY),
                     errno_of(os.unlink, path))
    return out


def test_case_variants_and_dot_paths_through_the_mount(mounted, client):
    with open(os.path.join(mounted.inbox, SECRET), 'wb') as f:
        f.write(SECRET_DATA)
    os.mkdir(os.path.join(mounted.inbox, 'sub'))
    names = [SECRET, SECRET.upper(), 'sub/../' + SECRET, './' + SECRET, SECRET + '/.']
    got = client.call(_probe_names, mounted.mnt, names)
    for name, errs in got.items():
        assert all(e in (errno.ENOENT, errno.ENOTDIR) for e in errs), (name, errs)
    # Its own create of the same name succeeds and changes nothing.
    client.call(create_excl, os.path.join(mounted.mnt, SECRET), b'the client\'s')
    found = inbox_contents(mounted.inbox)
    assert found.pop(SECRET) == SECRET_DATA
    assert list(found.values()) == [b'the client\'s']
