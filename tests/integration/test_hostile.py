"""Hostile input from clients, and from root where it matters (R8, R9,
R12): strange and over-long names, names that look
like the daemon's own, '..' and '/', maximum-size xattrs, huge offsets,
racing rename/unlink of one open drop. Each gets a clear errno or works;
nothing crashes, nothing escapes INBOX, nothing is lost. Checked in the
BACKING inbox, by content; the fixtures check after each test that the
daemon is alive and logged no error."""

import errno
import os
import re
import stat
import threading

import pytest

from helpers import (OTHER_UID, STAGING, TIMEOUT, assert_quarantine_accounted, create_excl,
                     errno_of, inbox_files, incomplete, message, read_file, staged, wait_until,
                     xattr_64k_supported)

WINDOWS_FORBIDDEN = set(b'<>:"/\\|?*') | set(range(0x20))


def _drop_each_twice(mnt, names):
    """One session drops two messages under each name, one after the
    other (the second finds the first in the inbox: a unique name)."""
    out = []
    for name in names:
        for k in range(2):
            data = message(f'{name.hex()}-{k}', 100)
            create_excl(os.path.join(os.fsencode(mnt), name), data)
            out.append(data)
    return out


def backing_names(m):
    """The byte names of the regular files at the top of the backing inbox."""
    top = os.fsencode(m.inbox)
    return {e.name: read_file(os.path.join(top, e.name)) for e in os.scandir(top)
            if e.is_file(follow_symlinks=False)}


def assert_unique_form(name, requested):
    """R9: a unique name for REQUESTED fits in 255 bytes, keeps the
    extension, never starts with a dot and holds nothing Windows forbids.
    Where the extension itself holds such bytes (or invalid UTF-8), they
    may be replaced: then it keeps its length and its other bytes."""
    dot = requested.rfind(b'.')
    ext = requested[dot:] if dot > 0 else b''
    assert len(name) <= 255, (name, len(name))
    assert not name.startswith(b'.'), name
    bad = sorted(set(name) & WINDOWS_FORBIDDEN)
    assert not bad, f'unique name {name!r} holds bytes Windows forbids: {bad}'
    got = name[len(name) - len(ext):] if ext else b''
    keep = [i for i, c in enumerate(ext) if 0x20 <= c < 0x7f and c not in WINDOWS_FORBIDDEN]
    assert got[:1] == ext[:1] and all(got[i] == ext[i] for i in keep), \
        f'unique name {name!r} lost the extension {ext!r}'


def check_twice_delivered(m, names, payloads):
    """Both messages of each name are in the inbox, intact: one under the
    name asked for, the other under a unique name of the right form."""
    found = backing_names(m)
    by_data = {d: n for n, d in found.items()}
    assert len(found) == len(payloads), sorted(found)
    for i, name in enumerate(names):
        first, second = payloads[2 * i], payloads[2 * i + 1]
        assert first in by_data and second in by_data, f'{name!r}: a message was lost'
        stored = {by_data[first], by_data[second]}
        assert name in stored, f'{name!r} was not stored under its own name: {stored}'
        (other,) = stored - {name}
        assert_unique_form(other, name)


# ------------------------------------------------------------------ names

CONTROL_NAMES = [b'ctl\x01\x02\x1b[31m\x7f.SVF', b'tab\there\x0b.SVF',
                 b'evil\ninboxfs: forged line.SVF', b'\x01lead.SVF', b'cr\r.S\x05F']


def test_names_with_control_bytes(mounted, client):
    payloads = client.call(_drop_each_twice, mounted.mnt, CONTROL_NAMES)

    check_twice_delivered(mounted, CONTROL_NAMES, payloads)
    # The log escapes them: no raw control byte, no forged line.
    log = mounted.log()
    assert not re.search(r'[\x00-\x08\x0b-\x1f\x7f]', log), 'raw control bytes in the log'
    assert not [line for line in log.splitlines() if line.startswith('inboxfs: forged')]


def test_observer_truncating_open_of_control_byte_name(mounted):
    """Root's truncating open of an existing file writes beside it (R3);
    the unique name it gets is sanitised like a client's."""
    name = b'obs\x01\x1f.SVF'
    path = os.path.join(os.fsencode(mounted.mnt), name)
    for data in (b'first', b'second'):
        with open(path, 'wb') as f:
            f.write(data)
    found = backing_names(mounted)
    assert found[name] == b'first'
    (other,) = [n for n, d in found.items() if d == b'second']
    assert_unique_form(other, name)


INVALID_UTF8 = [b'\xff\xfe bad \xc3.SVF', b'\xc3\x28.SVF', b'\xed\xa0\x80surrogate.SVF',
                b'\xf8\x88\x80\x80\x80.SVF', b'ok.\xff\xfe']


def test_names_with_invalid_utf8(mounted, client):
    payloads = client.call(_drop_each_twice, mounted.mnt, INVALID_UTF8)

    check_twice_delivered(mounted, INVALID_UTF8, payloads)


LONG_NAMES = [
    b'A' * 251 + b'.SVF',                              # 255 bytes
    'é'.encode() * 125 + b'x.SVF',                     # 250 + 5: two-byte characters
    '😀'.encode() * 61 + b'abcdefg.SVF',               # 244 + 11: four-byte characters
]


@pytest.mark.parametrize('name', LONG_NAMES, ids=['ascii', 'utf8-2', 'utf8-4'])
def test_255_byte_name_and_its_unique_twin(mounted, client, name):
    assert len(name) == 255
    payloads = client.call(_drop_each_twice, mounted.mnt, [name])

    check_twice_delivered(mounted, [name], payloads)
    (other,) = set(backing_names(mounted)) - {name}
    assert other.startswith(name[:1])
    if name[0] >= 0x80:             # shortened on a character boundary
        other.decode('utf-8')


def test_255_byte_name_that_is_nearly_all_extension(mounted, client):
    """A 255-byte name whose extension alone is 253 bytes, dropped twice:
    the second cannot keep the whole extension in 255 bytes; it must still
    be delivered (or its close fail), never lost silently."""
    name = b'A.' + b'x' * 253

    def drop_twice(mnt):
        out = []
        for k in range(2):
            data = message(f'ext-{k}', 10)
            fd = os.open(os.path.join(os.fsencode(mnt), name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.write(fd, data)
            out.append((data, errno_of(os.close, fd)))
        return out

    results = client.call(drop_twice, mounted.mnt)

    found = backing_names(mounted)
    for data, close_err in results:
        if close_err == 0:
            assert data in found.values(), 'a close returned 0 and the message is not there'
        else:
            assert data not in found.values()
    assert all(len(n) <= 255 for n in found)
    assert results[0][1] == 0 and found[name] == results[0][0]


def _long_name_calls(mnt, short):
    long = 'B' * 252 + '.SVF'                     # 256 bytes
    path = os.path.join(mnt, long)
    out = {
        'create': errno_of(create_excl, path, b'x'),
        'stat': errno_of(os.stat, path),
        'mkdir': errno_of(os.mkdir, path),
    }
    fd = os.open(os.path.join(mnt, short), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, short.encode())
    out['rename'] = errno_of(os.rename, os.path.join(mnt, short), path)
    os.close(fd)
    return out


def test_256_byte_name_is_enametoolong(mounted, client):
    expected = {'create': errno.ENAMETOOLONG, 'stat': errno.ENAMETOOLONG,
                'mkdir': errno.ENAMETOOLONG, 'rename': errno.ENAMETOOLONG}
    assert client.call(_long_name_calls, mounted.mnt, 'CLIENT.SVF') == expected
    assert _long_name_calls(mounted.mnt, 'ROOT.SVF') == expected          # root too
    assert inbox_files(mounted) == {'CLIENT.SVF': b'CLIENT.SVF', 'ROOT.SVF': b'ROOT.SVF'}


INTERNAL_LOOKING = ['d.0123456789abcdef', 'a.0123456789abcdef', 'x~ABCDEFGHJKMN.svf',
                    '.inboxfs-stats', 'incomplete', 'STEM~0123456789AB.SVF']


def _drop_names(mnt, names):
    for name in names:
        create_excl(os.path.join(mnt, name), f'message named {name}'.encode())
    # And one renamed, while open, to a staging-like name.
    fd = os.open(os.path.join(mnt, 'TMP.TMP'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, b'renamed to d.fedcba9876543210')
    os.rename(os.path.join(mnt, 'TMP.TMP'), os.path.join(mnt, 'd.fedcba9876543210'))
    os.close(fd)


def _with_stats_name_rewritten(files):
    """The top-level name .inboxfs-stats is the stats file's: a message asking
    for it gets a unique name (_inboxfs-stats~TAG), never hidden behind it."""
    out = dict(files)
    taken = [n for n in out if re.fullmatch(r'_inboxfs-stats~[0-9A-HJKMNP-TV-Z]{12}', n)]
    assert len(taken) == 1, sorted(out)
    out['.inboxfs-stats'] = out.pop(taken[0])
    return out


def test_names_that_look_like_the_daemons_own(mounted, client):
    """Staging-like and unique-name-like names are plain messages: they
    are delivered under their names (but for the stats file's), and a
    restart (recovery) leaves them alone."""
    client.call(_drop_names, mounted.mnt, INTERNAL_LOOKING)

    expected = {n: f'message named {n}'.encode() for n in INTERNAL_LOOKING}
    expected['d.fedcba9876543210'] = b'renamed to d.fedcba9876543210'
    assert '.inboxfs-stats' not in inbox_files(mounted)
    assert _with_stats_name_rewritten(inbox_files(mounted)) == expected
    assert staged(mounted.inbox, acked=True) == [] and incomplete(mounted.inbox) == {}
    mounted.restart()
    assert _with_stats_name_rewritten(inbox_files(mounted)) == expected
    assert incomplete(mounted.inbox) == {}
    # Through the mount root sees every one of them.
    seen = set(os.listdir(mounted.mnt))
    assert set(_with_stats_name_rewritten(inbox_files(mounted))) - {'.inboxfs-stats'} <= seen
    assert any(n.startswith('_inboxfs-stats~') for n in seen)


def _play_staging(mnt, tag):
    top = os.path.join(mnt, '.inboxfs')
    out = {'lookup': errno_of(os.stat, top),
           'mkdir': errno_of(os.mkdir, top),
           'inside': errno_of(create_excl, os.path.join(top, 'incomplete', 'x'), b'x'),
           'rmdir': errno_of(os.rmdir, top)}
    # A file named .inboxfs: its create succeeds or fails, never touches staging.
    try:
        fd = os.open(top, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        out['create'] = e.errno
    else:
        out['create'] = 0
        os.write(fd, b'a message called .inboxfs')
        out['close'] = errno_of(os.close, fd)
    # An open drop renamed onto .inboxfs.
    fd = os.open(os.path.join(mnt, f'{tag}.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, b'renamed onto .inboxfs')
    out['rename'] = errno_of(os.rename, os.path.join(mnt, f'{tag}.SVF'), top)
    out['rename_close'] = errno_of(os.close, fd)
    return out


def test_a_file_named_dot_inboxfs(mounted, client):
    """A client (and root) naming things .inboxfs: whatever each call
    answers, the staging directory stays a directory, whole, hidden, and
    nothing of it is exposed; whatever was acknowledged is delivered."""
    staging = os.path.join(mounted.inbox, STAGING)
    before = os.stat(staging)
    s = client.session()
    held = s.open(os.path.join(mounted.mnt, 'HELD.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    s.write(held, b'staged while others play')     # a drop in staging meanwhile

    out = client.call(_play_staging, mounted.mnt, 'CLIENT')
    root = _play_staging(mounted.mnt, 'ROOT')
    root['symlink'] = errno_of(os.symlink, '/etc', os.path.join(mounted.mnt, '.inboxfs'))
    s.close(held)

    print(f'\nclient: {out}\nroot: {root}')
    after = os.stat(staging)
    assert stat.S_ISDIR(after.st_mode) and after.st_ino == before.st_ino
    assert os.path.isdir(os.path.join(staging, 'incomplete'))
    assert out['lookup'] == errno.ENOENT and root['lookup'] == errno.ENOENT
    assert out['inside'] == errno.ENOENT and root['inside'] == errno.ENOENT
    assert '.inboxfs' not in os.listdir(mounted.mnt)
    found = inbox_files(mounted)
    delivered = {d: n for n, d in found.items()}
    assert delivered[b'staged while others play'] == 'HELD.SVF'
    for who, res in (('client', out), ('root', root)):
        if res.get('create') == 0 and res.get('close') == 0:
            assert b'a message called .inboxfs' in delivered, f'{who}: acknowledged and lost'
        if res['rename'] == 0 and res['rename_close'] == 0:
            assert b'renamed onto .inboxfs' in delivered, f'{who}: acknowledged and lost'
    assert all(not n.startswith('.inboxfs') for n in found), sorted(found)
    assert staged(mounted.inbox, acked=True) == []


def _dots_and_slashes(mnt):
    mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open('OPEN.SVF', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=mfd)
        os.write(fd, b'open while names are abused')
        out = {
            'create ..': errno_of(os.open, '..', os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                  dir_fd=mfd),
            'create .': errno_of(os.open, '.', os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 dir_fd=mfd),
            'create a/b': errno_of(os.open, 'nosuchdir/b', os.O_WRONLY | os.O_CREAT,
                                   dir_fd=mfd),
            'mkdir ..': errno_of(os.mkdir, '..', dir_fd=mfd),
            'rename to ..': errno_of(os.rename, 'OPEN.SVF', '..', src_dir_fd=mfd,
                                     dst_dir_fd=mfd),
            'rename to .': errno_of(os.rename, 'OPEN.SVF', '.', src_dir_fd=mfd,
                                    dst_dir_fd=mfd),
            'rename to sub/..': errno_of(os.rename, 'OPEN.SVF', 'sub/..', src_dir_fd=mfd,
                                         dst_dir_fd=mfd),
            'unlink ..': errno_of(os.unlink, '..', dir_fd=mfd),
            'rmdir sub/..': errno_of(os.rmdir, 'sub/..', dir_fd=mfd),
            'symlink': errno_of(os.symlink, '../../etc', 'esc', dir_fd=mfd),
        }
        # '..' inside the mount goes where a directory's '..' goes: still INBOX.
        create_excl(os.path.join(mnt, 'sub', '..', 'UP.SVF'), b'through sub/..')
        os.close(fd)
    finally:
        os.close(mfd)
    return out


def test_dot_dot_and_slash_fail_cleanly(mounted, client):
    os.mkdir(os.path.join(mounted.inbox, 'sub'))
    os.chmod(os.path.join(mounted.inbox, 'sub'), 0o1777)

    out = client.call(_dots_and_slashes, mounted.mnt)

    print(f'\n{out}')
    assert all(e != 0 for e in out.values()), out
    assert out['create a/b'] == errno.ENOENT
    assert out['symlink'] == errno.EPERM
    assert inbox_files(mounted) == {'OPEN.SVF': b'open while names are abused',
                                    'UP.SVF': b'through sub/..'}
    # Nothing was made beside or above the inbox.
    assert not os.path.lexists(os.path.join(mounted.base, 'esc'))
    assert not os.path.lexists(os.path.join(mounted.inbox, 'esc'))


def test_publication_never_follows_a_symlink_swapped_in(mounted, client, tmp_path):
    """R8: a drop's directory is renamed away and a symlink to a directory
    outside INBOX put in its place while the drop is open: the drop is
    published into its real directory (held by handle), never through the
    symlink."""
    sub = os.path.join(mounted.inbox, 'sub')
    os.mkdir(sub)
    os.chmod(sub, 0o1777)
    outside = tmp_path / 'outside'
    outside.mkdir()
    outside.chmod(0o1777)
    s = client.session()
    fd = s.open(os.path.join(mounted.mnt, 'sub', 'SWAP.SVF'),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    s.write(fd, b'stays inside')
    os.rename(sub, sub + '.moved')
    os.symlink(str(outside), sub)
    s.close(fd)

    assert list(outside.iterdir()) == []
    assert read_file(os.path.join(sub + '.moved', 'SWAP.SVF')) == b'stays inside'
    assert os.path.islink(sub)


# ----------------------------------------------------------------- xattrs

@pytest.fixture
def tmpfs_mount(mount_inboxfs, monkeypatch):
    """inboxfs over an inbox on tmpfs (/dev/shm), where 64 KiB user xattr
    values can be stored (ext4 without ea_inode cannot)."""
    if not os.path.isdir('/dev/shm') or not xattr_64k_supported('/dev/shm'):
        pytest.skip('no tmpfs with 64 KiB user xattrs at /dev/shm')
    monkeypatch.setenv('INBOXFS_TMPDIR', '/dev/shm')
    return mount_inboxfs()


def _xattrs_on_open_drop(mnt, value):
    path = os.path.join(mnt, 'XATTR.SVF')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'with a big xattr')
    os.setxattr(path, 'user.big', value)
    os.setxattr(fd, 'user.small', b's')
    out = {
        'get': os.getxattr(path, 'user.big') == value,
        'get_fd': os.getxattr(fd, 'user.big') == value,
        'list': sorted(os.listxattr(path)),
        'too_big': errno_of(os.setxattr, path, 'user.bigger', value + b'x'),
        'long_name': errno_of(os.setxattr, path, 'user.' + 'n' * 251, b'v'),
        'set_origin': errno_of(os.setxattr, path, 'trusted.inboxfs.origin', b'x' * 16),
        'get_origin': errno_of(os.getxattr, path, 'trusted.inboxfs.origin'),
        'remove_origin': errno_of(os.removexattr, path, 'trusted.inboxfs.origin'),
        'set_capability': errno_of(os.setxattr, path, 'security.capability', b'\0' * 20),
    }
    os.removexattr(path, 'user.small')
    os.close(fd)
    return out


def test_64k_xattr_on_a_clients_open_drop(tmpfs_mount, client):
    m = tmpfs_mount
    value = os.urandom(65536)

    out = client.call(_xattrs_on_open_drop, m.mnt, value)

    assert out['get'] and out['get_fd']
    assert out['too_big'] == errno.E2BIG
    assert out['long_name'] == errno.ERANGE
    # The daemon's own xattr is not the client's to touch.
    assert out['set_origin'] == errno.EPERM
    assert out['get_origin'] in (errno.ENODATA, errno.EPERM)
    assert out['remove_origin'] in (errno.ENODATA, errno.EPERM)
    assert out['set_capability'] in (errno.EPERM, errno.EINVAL)     # the kernel's answer
    stored = os.path.join(m.inbox, 'XATTR.SVF')
    assert read_file(stored) == b'with a big xattr'
    assert os.getxattr(stored, 'user.big') == value
    assert 'user.small' not in os.listxattr(stored)
    assert 'security.capability' not in os.listxattr(stored)
    assert 'user.big' in out['list'] and 'user.small' in out['list']


def test_clients_do_not_see_the_daemons_xattr_names(mounted, client):
    """listxattr on a client's own drop lists what the client may read:
    not the daemon's trusted.inboxfs.origin (ext4 hides trusted.* from
    unprivileged callers; the daemon lists as root)."""
    s = client.session()
    fd = s.open(os.path.join(mounted.mnt, 'L.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        names = s.listxattr(os.path.join(mounted.mnt, 'L.SVF'))
    finally:
        s.close(fd)
    assert not [n for n in names if n.startswith('trusted.')], names


def test_observers_list_the_daemons_xattr_names_as_ext4_would(mount_inboxfs, as_client,
                                                             client):
    """A published message keeps its origin attribute (README, "Syncs on GlusterFS"). Root, an
    observer, lists it as it would on the backing ext4; an observer without
    privilege does not, as on ext4 (the kernel refuses it the value of any
    trusted.* attribute): cp -a or rsync -X of messages through the mount
    by the consumer's account finds nothing it cannot read. Red before the
    observers' listing was filtered: the consumer listed it."""
    m = mount_inboxfs(observers=f'root:{OTHER_UID}')
    path = os.path.join(m.mnt, 'KEPT.SVF')
    client.call(create_excl, path, b'published')
    assert 'trusted.inboxfs.origin' in os.listxattr(os.path.join(m.inbox, 'KEPT.SVF'))
    assert 'trusted.inboxfs.origin' in os.listxattr(path)
    consumer = as_client(OTHER_UID)
    assert consumer.call(os.path.exists, path)      # an observer: it sees the message
    names = consumer.call(os.listxattr, path)
    assert not [n for n in names if n.startswith('trusted.')], names


def test_64k_xattr_on_an_observer_file(tmpfs_mount):
    m = tmpfs_mount
    path = os.path.join(m.mnt, 'OBS.SVF')
    with open(path, 'wb') as f:
        f.write(b'observer file')
    value = os.urandom(65536)

    os.setxattr(path, 'user.big', value)

    assert os.getxattr(path, 'user.big') == value
    assert os.getxattr(os.path.join(m.inbox, 'OBS.SVF'), 'user.big') == value
    assert errno_of(os.setxattr, path, 'user.bigger', value + b'x') == errno.E2BIG
    os.removexattr(path, 'user.big')
    assert 'user.big' not in os.listxattr(os.path.join(m.inbox, 'OBS.SVF'))


# ------------------------------------------------------------ huge offsets

HUGE_OK = [('pwrite 2**40', 'pwrite', 2 ** 40), ('pread 2**40', 'pread', 2 ** 40),
           ('pread 2**62', 'pread', 2 ** 62), ('seek data 2**62', 'seek', 2 ** 62)]
HUGE_BAD = [('pwrite 2**44', 'pwrite', 2 ** 44), ('pwrite 2**63-2', 'pwrite', 2 ** 63 - 2),
            ('pwrite 2**63-1', 'pwrite', 2 ** 63 - 1), ('truncate 2**62', 'truncate', 2 ** 62),
            ('fallocate 2**62', 'fallocate', 2 ** 62)]


def _at(fd, op, off):
    if op == 'pwrite':
        return os.pwrite(fd, b'x', off)
    if op == 'truncate':
        return os.ftruncate(fd, off)
    if op == 'fallocate':
        return os.posix_fallocate(fd, off, 4096)
    if op == 'seek':
        return os.lseek(fd, off, os.SEEK_DATA)
    return os.pread(fd, 1, off)


def _probe(fd, probes):
    out = {}
    for label, op, off in probes:
        try:
            out[label] = ('ok', _at(fd, op, off))
        except OSError as e:
            out[label] = ('err', errno.errorcode.get(e.errno, e.errno))
    return out


def _huge_offsets(directory, prefix):
    """One file with the calls that a filesystem of 16 TiB files allows,
    then one file per call it refuses. Returns the answers, the closes'
    answers and the files' sizes."""
    out, closes = {}, {}
    fd = os.open(os.path.join(directory, f'{prefix}OK.SVF'),
                 os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'head')
    out.update(_probe(fd, HUGE_OK))
    out['size'] = os.fstat(fd).st_size
    closes['ok'] = errno_of(os.close, fd)
    for k, probe in enumerate(HUGE_BAD):
        fd = os.open(os.path.join(directory, f'{prefix}BAD{k}.SVF'),
                     os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b'head')
        out.update(_probe(fd, [probe]))
        closes[probe[0]] = errno_of(os.close, fd)
    return out, closes


def test_huge_offsets(mounted, client, tmp_path):
    """pwrite at 2**40, 2**44 and near 2**63-1, truncate, fallocate, seek
    and read at huge offsets, on clients' drops and observers' files: each
    call answers as the backing filesystem itself does; the daemon
    survives; the sparse drop is delivered whole; a drop that met a
    refused call is either delivered whole (its close returned 0) or sits
    in incomplete/ (its close failed), never lost, never partial."""
    baseline = tmp_path / 'baseline'
    baseline.mkdir()
    if os.stat(baseline).st_dev != os.stat(mounted.inbox).st_dev:
        pytest.skip('the baseline must be on the backing filesystem')
    expected, plain_closes = _huge_offsets(str(baseline), 'P')
    assert set(plain_closes.values()) == {0}

    got_client, client_closes = client.call(_huge_offsets, mounted.mnt, 'C')
    got_root, root_closes = _huge_offsets(mounted.mnt, 'R')

    print(f'\nbacking filesystem: {expected}\nclient closes: {client_closes}')
    assert got_client == expected
    assert got_root == expected
    assert set(root_closes.values()) == {0}, root_closes
    assert client_closes['ok'] == 0
    stored = os.path.join(mounted.inbox, 'COK.SVF')
    assert os.stat(stored).st_size == expected['size'] == 2 ** 40 + 1
    with open(stored, 'rb') as f:
        assert f.read(4) == b'head'
        f.seek(2 ** 40)
        assert f.read(1) == b'x'
    found = set(mounted.backing_files())
    quarantined = incomplete(mounted.inbox)
    for k, (label, _, _) in enumerate(HUGE_BAD):
        name = f'CBAD{k}.SVF'
        if client_closes[label] == 0:
            assert name in found, f'{label}: close returned 0, not delivered'
            assert read_file(os.path.join(mounted.inbox, name)).startswith(b'head')
        else:
            assert name not in found, f'{label}: close failed, yet delivered'
    failed = sum(1 for label, e in client_closes.items() if e)
    assert len(quarantined) == failed
    assert_quarantine_accounted(mounted)
    assert all(d.startswith(b'head') for d in quarantined.values())
    for name in found:
        os.unlink(os.path.join(mounted.inbox, name))        # sparse giants
    assert os.stat(mounted.mnt).st_ino                    # still serving
    mounted.allow_log(r'File too large')


# ------------------------------------- racing rename/unlink of one open drop

def _race(mnt, iterations, mode):
    """Two threads of one process (one session) race on one open drop per
    iteration: A renames R{i} to S{i}; B unlinks R{i} ('unlink'), or R{i}
    and else S{i} ('unlink-any'), or closes the last descriptor ('close').
    Returns per iteration whether an unlink succeeded and what failed."""
    outcome = []
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    state = {}

    def renamer(i):
        state['rename'] = errno_of(os.rename, os.path.join(mnt, f'R{i}.SVF'),
                                   os.path.join(mnt, f'S{i}.SVF'))

    def other(i, fd):
        if mode == 'close':
            state['close'] = errno_of(os.close, fd)
            return
        state['unlink'] = errno_of(os.unlink, os.path.join(mnt, f'R{i}.SVF'))
        if mode == 'unlink-any' and state['unlink']:
            state['unlink'] = errno_of(os.unlink, os.path.join(mnt, f'S{i}.SVF'))

    for i in range(iterations):
        fd = os.open(os.path.join(mnt, f'R{i}.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, f'iteration {i}'.encode())
        state.clear()
        threads = [threading.Thread(target=lambda: (barrier.wait(), renamer(i))),
                   threading.Thread(target=lambda: (barrier.wait(), other(i, fd)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        if mode != 'close':
            os.write(fd, b' and after')                 # still writable, whatever happened
            state['close'] = errno_of(os.close, fd)
        outcome.append(dict(state))
    return outcome


@pytest.mark.parametrize('mode', ['unlink', 'unlink-any', 'close'])
def test_concurrent_rename_and_unlink_of_one_open_drop(mounted, client, mode):
    iterations = 200
    outcome = client.call(_race, mounted.mnt, iterations, mode, timeout=TIMEOUT * 12)

    found = inbox_files(mounted)
    suffix = b'' if mode == 'close' else b' and after'
    for i, res in enumerate(outcome):
        data = f'iteration {i}'.encode() + suffix
        where = [n for n, d in found.items() if d == data]
        if res.get('unlink') == 0:
            assert where == [], f'iteration {i}: unlinked, yet delivered as {where} ({res})'
        else:
            assert res['close'] == 0, f'iteration {i}: {res}'
            expected = [f'S{i}.SVF'] if res['rename'] == 0 else [f'R{i}.SVF']
            assert where == expected, f'iteration {i}: {res}, delivered as {where}'
    assert len(found) == sum(1 for r in outcome if r.get('unlink') != 0)
    wait_until(lambda: staged(mounted.inbox, acked=True) == [], what='staging to empty')
    assert incomplete(mounted.inbox) == {}
    unlinked = sum(1 for r in outcome if r.get('unlink') == 0)
    renamed = sum(1 for r in outcome if r.get('rename') == 0)
    print(f'\n{mode}: {unlinked} unlinked, {renamed} renamed, {len(found)} delivered')
