"""Observers (root by default) through a real mount, continued: extended
attributes (SELinux labels, ACLs, user.* values up to 64 KiB), file data
(fallocate, sparse files, reads of any size and offset, readahead, a
1 GiB file), locks between processes, inode numbers and a directory of
20,000 files are a faithful passthrough of the inbox: observers see the
whole inbox and its files as they are. Every check is made in the BACKING
directory, by content.

Standard tools that never clobber a message (R3), names, attributes and
directories are in test_observer.py."""

import concurrent.futures
import errno
import fcntl
import hashlib
import mmap
import os
import random
import shutil

import pytest

from helpers import TIMEOUT, WRAPPER, errno_of, mounts, xattr_64k_supported
from helpers.posix import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MiB, fallocate, read,
                           run, write)

GiB = 1 << 30


# ============================================= faithful passthrough, continued

def test_selinux_label_absent_reads_as_unsupported(m):
    """No security.selinux on the backing file: the mount says labels are
    not supported (ls -l then stops asking, one LOOKUP and GETXATTR per
    file fewer); a label stored on the backing file still reads back."""
    path = os.path.join(m.mnt, 'label.svf')
    backing = os.path.join(m.inbox, 'label.svf')
    write(path, b'x')
    assert errno_of(os.getxattr, backing, 'security.selinux') == errno.ENODATA
    assert errno_of(os.getxattr, path, 'security.selinux') == errno.EOPNOTSUPP
    try:
        os.setxattr(backing, 'security.selinux', b'system_u:object_r:inbox_t:s0\0')
    except OSError as err:
        pytest.skip(f'the backing filesystem takes no security.selinux here: {err}')
    assert os.getxattr(path, 'security.selinux') == b'system_u:object_r:inbox_t:s0\0'


def _getfacl(path):
    out = run(['getfacl', '--omit-header', '--numeric', path], text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_acl_absent_reads_as_unsupported_and_setfacl_works(m, tmp_path):
    """No ACL on the backing file: the mount says ACLs are not supported, so
    ls -l asks once, not once per file. getfacl shows the ACL of the mode
    bits, as on the backing file; setfacl through the mount stores a real
    ACL (a file's, a directory's default) that reads back both ways."""
    path, backing = os.path.join(m.mnt, 'acl.svf'), os.path.join(m.inbox, 'acl.svf')
    sub, backing_sub = os.path.join(m.mnt, 'acldir'), os.path.join(m.inbox, 'acldir')
    write(path, b'x')
    os.chmod(path, 0o640)
    os.mkdir(sub)
    assert _getfacl(path) == _getfacl(backing) == 'user::rw-\ngroup::r--\nother::---\n\n'
    for i in range(50):
        write(os.path.join(m.inbox, f'many{i:02}.svf'), b'')
    trace = tmp_path / 'ls.strace'
    r = run(['strace', '-f', '-qq', '-o', trace, '-e', 'trace=getxattr,lgetxattr',
             'ls', '-l', m.mnt], env=dict(os.environ, LC_ALL='C'))
    assert r.returncode == 0, r.stderr
    with open(trace) as f:
        asked = [line for line in f if 'posix_acl' in line]
    assert 0 < len(asked) <= 2, f'ls -l asked for ACLs {len(asked)} times for 52 entries'
    assert errno_of(os.getxattr, backing, 'system.posix_acl_access') == errno.ENODATA
    assert errno_of(os.getxattr, path, 'system.posix_acl_access') == errno.EOPNOTSUPP
    assert errno_of(os.getxattr, sub, 'system.posix_acl_default') == errno.EOPNOTSUPP

    r = run(['setfacl', '-m', 'u:60100:rw', path])
    if r.returncode != 0 and b'Operation not supported' in r.stderr:
        pytest.skip('the backing filesystem has no POSIX ACLs here')
    assert r.returncode == 0, r.stderr
    assert 'user:60100:rw-' in _getfacl(backing)
    assert _getfacl(path) == _getfacl(backing)
    assert (os.getxattr(path, 'system.posix_acl_access')
            == os.getxattr(backing, 'system.posix_acl_access'))
    r = run(['setfacl', '-d', '-m', 'u:60100:rwx', sub])
    assert r.returncode == 0, r.stderr
    assert 'default:user:60100:rwx' in _getfacl(backing_sub)
    assert _getfacl(sub) == _getfacl(backing_sub)


def test_xattrs(m):
    path = os.path.join(m.mnt, 'f.svf')
    backing = os.path.join(m.inbox, 'f.svf')
    write(path, b'x')

    os.setxattr(path, 'user.DOSATTRIB', b'\x00\x01binary\xff')
    os.setxattr(path, 'user.other', b'value')
    assert os.getxattr(backing, 'user.DOSATTRIB') == b'\x00\x01binary\xff'
    assert os.getxattr(path, 'user.other') == b'value'
    assert sorted(os.listxattr(path)) == sorted(os.listxattr(backing))
    assert {'user.DOSATTRIB', 'user.other'} <= set(os.listxattr(path))

    assert errno_of(os.setxattr, path, 'user.other', b'again', os.XATTR_CREATE) == errno.EEXIST
    os.setxattr(path, 'user.other', b'replaced', os.XATTR_REPLACE)
    assert os.getxattr(backing, 'user.other') == b'replaced'

    os.removexattr(path, 'user.other')
    assert 'user.other' not in os.listxattr(backing)
    assert errno_of(os.getxattr, path, 'user.other') == errno.ENODATA
    assert errno_of(os.removexattr, path, 'user.other') == errno.ENODATA

    # On a directory too; and a value set behind the mount is seen.
    os.setxattr(m.mnt, 'user.dir', b'on the root')
    assert os.getxattr(m.inbox, 'user.dir') == b'on the root'
    os.setxattr(backing, 'user.behind', b'b')
    assert os.getxattr(path, 'user.behind') == b'b'
    # getfattr / setfattr, the tools Samba admins use.
    assert run(['setfattr', '-n', 'user.tool', '-v', 'tv', path]).returncode == 0
    proc = run(['getfattr', '--only-values', '-n', 'user.tool', path])
    assert proc.stdout == b'tv'


def test_xattr_64k_value_behaves_as_backing(m):
    """On the test filesystem: exactly what the backing filesystem does
    (ext4 without ea_inode refuses 64 KiB with ENOSPC)."""
    value = os.urandom(65536)
    write(os.path.join(m.inbox, 'f'), b'')
    expected = errno_of(os.setxattr, os.path.join(m.inbox, 'f'), 'user.big', value)
    write(os.path.join(m.inbox, 'g'), b'')
    got = errno_of(os.setxattr, os.path.join(m.mnt, 'g'), 'user.big', value)
    assert got == expected, (os.strerror(got), os.strerror(expected))
    if expected == 0:
        assert os.getxattr(os.path.join(m.mnt, 'g'), 'user.big') == value
        assert os.getxattr(os.path.join(m.inbox, 'g'), 'user.big') == value


def test_xattr_64k_value_on_tmpfs(mount_inboxfs, monkeypatch):
    """A 64 KiB value (the VFS maximum) round-trips where the backing
    filesystem stores one (tmpfs)."""
    if not os.path.isdir('/dev/shm') or not xattr_64k_supported('/dev/shm'):
        pytest.skip('no tmpfs with 64 KiB user xattrs at /dev/shm')
    monkeypatch.setenv('INBOXFS_TMPDIR', '/dev/shm')
    m = mount_inboxfs()
    assert os.stat(m.inbox).st_dev == os.stat('/dev/shm').st_dev
    path = os.path.join(m.mnt, 'f')
    write(path, b'x')
    value = os.urandom(65536)

    os.setxattr(path, 'user.big', value)

    assert os.getxattr(os.path.join(m.inbox, 'f'), 'user.big') == value
    assert os.getxattr(path, 'user.big') == value
    assert 'user.big' in os.listxattr(path)
    os.removexattr(path, 'user.big')
    assert os.listxattr(os.path.join(m.inbox, 'f')) == []


def test_fallocate(m):
    path = os.path.join(m.mnt, 'f')
    backing = os.path.join(m.inbox, 'f')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 4 * MiB)
        assert os.fstat(fd).st_size == 4 * MiB
        st = os.stat(backing)
        assert st.st_size == 4 * MiB and st.st_blocks * 512 >= 4 * MiB

        fallocate(fd, 0, 4 * MiB, 1 * MiB)            # grows the file
        assert os.stat(backing).st_size == 5 * MiB
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 5 * MiB, 2 * MiB)
        st = os.stat(backing)
        assert st.st_size == 5 * MiB and st.st_blocks * 512 >= 7 * MiB

        before = os.stat(backing).st_blocks
        os.pwrite(fd, b'\xff' * MiB, 0)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, MiB)
        st = os.stat(backing)
        assert st.st_size == 5 * MiB
        assert st.st_blocks <= before - MiB // 512
        assert os.pread(fd, 16, 0) == b'\0' * 16
        assert os.stat(path).st_blocks == st.st_blocks
    finally:
        os.close(fd)


def test_sparse_file_and_seek_data_hole(m):
    path = os.path.join(m.mnt, 'sparse')
    backing = os.path.join(m.inbox, 'sparse')
    far = GiB
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.lseek(fd, far, os.SEEK_SET)
        os.write(fd, b'end')
        os.fsync(fd)
        st = os.stat(backing)
        assert st.st_size == far + 3
        assert st.st_blocks * 512 <= 64 * 1024, 'the hole was filled in'
        assert os.fstat(fd).st_blocks == st.st_blocks

        assert os.lseek(fd, 0, os.SEEK_DATA) == far
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, far, os.SEEK_HOLE) == far + 3
        with pytest.raises(OSError) as e:
            os.lseek(fd, far + 3, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO
        assert os.pread(fd, 4096, 12345) == b'\0' * 4096
        assert os.pread(fd, 10, far) == b'end'
    finally:
        os.close(fd)
    proc = run(['du', '-k', path], text=True)
    assert int(proc.stdout.split()[0]) <= 64


_LOCK_PROBE = r'''
import fcntl, sys
kind, path = sys.argv[1], sys.argv[2]
f = open(path, 'r+b')
try:
    if kind == 'flock':
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(11)
sys.exit(0)
'''


def _probe_lock(kind, path):
    return run(['/usr/bin/python3', '-c', _LOCK_PROBE, kind, path]).returncode


@pytest.mark.parametrize('kind', ['flock', 'lockf'])
def test_file_locks_conflict_between_processes(m, kind):
    path = os.path.join(m.mnt, 'locked.svf')
    write(path, b'x')
    lock = fcntl.flock if kind == 'flock' else fcntl.lockf

    assert _probe_lock(kind, path) == 0, 'free lock refused'
    with open(path, 'r+b') as f:
        lock(f, fcntl.LOCK_EX)
        assert _probe_lock(kind, path) == 11, 'a held exclusive lock was not seen'
        lock(f, fcntl.LOCK_UN)
        assert _probe_lock(kind, path) == 0
        lock(f, fcntl.LOCK_SH)
        if kind == 'flock':
            shared = run(['flock', '-n', '-s', path, 'true']).returncode
            assert shared == 0, 'two shared flocks must not conflict'
        assert _probe_lock(kind, path) == 11
    assert _probe_lock(kind, path) == 0
    if kind == 'flock':
        with open(path, 'r+b') as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            assert run(['flock', '-n', '-E', '99', path, 'true']).returncode == 99


def _big_file(m, size):
    path = os.path.join(m.mnt, 'big.bin')
    block = os.urandom(MiB)
    h = hashlib.sha256()
    with open(path, 'wb') as f:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, 'little') + block[8:]
            h.update(chunk)
            f.write(chunk)
    expected = h.hexdigest()
    assert os.stat(os.path.join(m.inbox, 'big.bin')).st_size == size

    def digest(p):
        h = hashlib.sha256()
        with open(p, 'rb', buffering=0) as f:
            while True:
                chunk = f.read(4 * MiB)
                if not chunk:
                    return h.hexdigest()
                h.update(chunk)

    assert digest(path) == expected, 'read back through the mount differs'
    assert digest(os.path.join(m.inbox, 'big.bin')) == expected, 'backing file differs'
    os.unlink(path)   # give the space back before the next test
    assert not os.path.exists(os.path.join(m.inbox, 'big.bin'))


def test_1gib_file_checksum(m):
    """1 GiB written through the mount, read back through it, and the
    backing file's sha256 equal to what was written. About 10 s here, so
    it runs by default; under INBOXFS_WRAPPER (valgrind) 64 MiB."""
    size = 64 * MiB if WRAPPER else GiB
    if shutil.disk_usage(m.inbox).free < size + GiB:
        pytest.skip(f'less than {(size + GiB) // MiB} MiB free for the big file')
    _big_file(m, size)


def test_reads_of_any_size_and_offset_return_the_backing_bytes(m):
    """Four threads read at once, at random offsets up to and past the end,
    sizes from 1 byte to 1 MiB, dropping the mount's page cache before each
    read: the kernel asks READs of many sizes, each worker thread's read
    buffer grows and is reused, and every byte is the backing file's."""
    size = 3 * MiB + 4097
    data = os.urandom(size)
    write(os.path.join(m.inbox, 'odd.bin'), data)
    path = os.path.join(m.mnt, 'odd.bin')

    def reader(seed):
        rng = random.Random(seed)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(150):
                n = rng.choice([1, 511, 4096, 65537, MiB - 1, MiB])
                off = rng.randrange(size + 10)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                got = os.pread(fd, n, off)
                assert got == data[off:off + n], f'pread({n}, {off}) differs'
        finally:
            os.close(fd)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(reader, seed) for seed in range(4)]:
            f.result(timeout=TIMEOUT * 4)
    assert read(path) == data


def test_write_only_descriptor_and_cached_readers_agree(m):
    """A write-only descriptor writes past the page cache (direct I/O); a
    reader holding the file open, and a shared mapping of it, still see
    every write at once."""
    path = os.path.join(m.mnt, 'shared.txt')
    with open(os.path.join(m.inbox, 'shared.txt'), 'wb') as f:
        f.write(b'old data here\n')
    reader = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == b'old data here\n'     # now cached
        mapped = mmap.mmap(reader, 0, mmap.MAP_SHARED, mmap.PROT_READ)
        for data in (b'NEW', b'ZZZ'):
            fd = os.open(path, os.O_WRONLY)
            try:
                assert os.pwrite(fd, data, 0) == 3
            finally:
                os.close(fd)
            assert os.pread(reader, 100, 0) == data + b' data here\n'
            assert mapped[:3] == data
        mapped.close()
    finally:
        os.close(reader)
    with open(os.path.join(m.inbox, 'shared.txt'), 'rb') as f:
        assert f.read() == b'ZZZ data here\n'


def test_readahead_raised_to_one_mib(m):
    """The kernel starts a FUSE mount at 128 KiB of readahead; inboxfs
    raises its mount's to 1 MiB (one READ per MiB of a sequential read)."""
    devs = [x.dev for x in mounts() if x.point == os.path.realpath(m.mnt)]
    assert devs, 'the mount is not in mountinfo'
    with open(f'/sys/class/bdi/{devs[-1]}/read_ahead_kb') as f:
        assert int(f.read()) == 1024


def test_inode_numbers_equal_backing(m):
    os.mkdir(os.path.join(m.mnt, 'd'))
    write(os.path.join(m.mnt, 'd', 'f'), b'x')
    os.symlink('f', os.path.join(m.mnt, 'd', 'l'))
    os.mkfifo(os.path.join(m.mnt, 'd', 'p'))

    assert os.stat(m.mnt).st_ino == os.stat(m.inbox).st_ino
    for rel in ('d', 'd/f'):
        assert os.stat(os.path.join(m.mnt, rel)).st_ino == os.stat(os.path.join(m.inbox, rel)).st_ino
    for rel in ('d/l', 'd/p'):
        assert os.lstat(os.path.join(m.mnt, rel)).st_ino == os.lstat(os.path.join(m.inbox, rel)).st_ino
    # readdir's d_ino too.
    mine = {e.name: e.inode() for e in os.scandir(os.path.join(m.mnt, 'd'))}
    theirs = {e.name: e.inode() for e in os.scandir(os.path.join(m.inbox, 'd'))}
    assert mine == theirs
    proc = run(['ls', '-i', '-1', os.path.join(m.mnt, 'd')], text=True)
    assert {l.split()[1]: int(l.split()[0]) for l in proc.stdout.splitlines()} == theirs


def _daemon_fds(m):
    return len(os.listdir(f'/proc/{m.pid}/fd'))


def test_20000_files_listed_and_stated_with_few_descriptors(m):
    n = 20_000
    big = os.path.join(m.inbox, 'big')
    os.mkdir(big)
    for i in range(n):
        os.close(os.open(os.path.join(big, f'f{i:05d}.svf'), os.O_WRONLY | os.O_CREAT, 0o644))
    write(os.path.join(big, 'f00007.svf'), b'seven')
    fds_before = _daemon_fds(m)

    names = os.listdir(os.path.join(m.mnt, 'big'))
    assert len(names) == n
    sizes = {}
    for name in names:
        sizes[name] = os.stat(os.path.join(m.mnt, 'big', name)).st_size
    assert sizes['f00007.svf'] == 5 and sum(sizes.values()) == 5

    fds = _daemon_fds(m)
    assert fds < 200, f'the daemon holds {fds} descriptors after stat-ing {n} files'
    # ls -l (readdirplus) over all of them, no error.
    proc = run(['ls', '-l', os.path.join(m.mnt, 'big')], text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == n + 1
    fds = _daemon_fds(m)
    assert fds < 200, f'the daemon holds {fds} descriptors after ls -l of {n} files'
    assert fds <= fds_before + 20
