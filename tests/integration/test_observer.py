"""Observers (root by default) through a real mount: standard tools never
clobber a message (R3), and names, attributes and directories are a
faithful passthrough of the inbox (observers see the whole inbox).
Every check is made in the BACKING directory, by content.

Extended attributes, file data, locks and large files and directories are
in test_observer_data.py."""

import errno
import os
import re
import stat
import subprocess
import time

import pytest

from helpers import TIMEOUT, wait_until
from helpers.posix import RENAME_EXCHANGE, RENAME_NOREPLACE, MiB, read, renameat2, run, write


# ------------------------------------------------------------------ helpers

def contents(directory):
    """{name: bytes} of the regular files in a backing directory, staging
    excluded: what a consumer would pick up."""
    found = {}
    for entry in os.scandir(directory):
        if entry.name != '.inboxfs' and entry.is_file(follow_symlinks=False):
            found[entry.name] = read(entry.path)
    return found


def unique_names(names, stem, ext):
    """The names of the form STEM~TAG.EXT (R9's default template)."""
    pattern = re.compile(re.escape(stem) + r'~[0-9A-Za-z]+' + re.escape(ext) + '$')
    return [n for n in names if pattern.match(n)]


def same_attrs(a, b):
    """The attributes a faithful passthrough must report unchanged."""
    keys = ('st_ino', 'st_mode', 'st_nlink', 'st_uid', 'st_gid', 'st_size',
            'st_mtime_ns', 'st_ctime_ns')
    return {k: getattr(a, k) for k in keys} == {k: getattr(b, k) for k in keys}


@pytest.fixture
def payloads(tmp_path):
    """Two different local files, A and B, outside the mount."""
    a, b = tmp_path / 'A', tmp_path / 'B'
    a.write_bytes(b'payload A ' + os.urandom(3000))
    b.write_bytes(b'payload B, a longer one ' + os.urandom(5000))
    return str(a), str(b), a.read_bytes(), b.read_bytes()


# ================================================== R3: nothing is clobbered

def test_cp_twice_to_one_name_keeps_both(m, payloads):
    a, b, data_a, data_b = payloads
    dst = os.path.join(m.mnt, 'x.svf')

    assert run(['cp', a, dst]).returncode == 0
    assert run(['cp', b, dst]).returncode == 0

    got = contents(m.inbox)
    assert got['x.svf'] == data_a, 'x.svf must still hold the first payload'
    others = unique_names(got, 'x', '.svf')
    assert len(others) == 1, f'expected one x~TAG.svf, found {sorted(got)}'
    assert got[others[0]] == data_b
    assert sorted(got) == sorted(['x.svf'] + others)
    # R10: the rewrite is logged with both names.
    wait_until(lambda: others[0] in m.log(), what='the rewrite to be logged')
    assert 'x.svf' in m.log()


def test_mv_onto_existing_name_keeps_both(m, payloads):
    a, b, data_a, data_b = payloads
    write(os.path.join(m.mnt, 'x.svf'), data_a)
    write(os.path.join(m.mnt, 'incoming.tmp'), data_b)

    proc = run(['mv', os.path.join(m.mnt, 'incoming.tmp'), os.path.join(m.mnt, 'x.svf')])
    assert proc.returncode == 0, proc.stderr

    got = contents(m.inbox)
    assert got['x.svf'] == data_a
    assert 'incoming.tmp' not in got
    others = unique_names(got, 'x', '.svf')
    assert len(others) == 1 and got[others[0]] == data_b, sorted(got)


def test_rename_onto_existing_name_keeps_both(m, payloads):
    _, _, data_a, data_b = payloads
    write(os.path.join(m.mnt, 'x.svf'), data_a)
    write(os.path.join(m.mnt, 'y.svf'), data_b)

    os.rename(os.path.join(m.mnt, 'y.svf'), os.path.join(m.mnt, 'x.svf'))

    got = contents(m.inbox)
    assert got['x.svf'] == data_a
    others = unique_names(got, 'x', '.svf')
    assert sorted(got) == sorted(['x.svf'] + others) and len(others) == 1
    assert got[others[0]] == data_b


def test_rsync_two_files_to_one_name_keeps_both(m, payloads):
    a, b, data_a, data_b = payloads
    dst = os.path.join(m.mnt, 'r.svf')

    for src in (a, b):
        proc = run(['rsync', src, dst])
        assert proc.returncode == 0, proc.stderr

    got = contents(m.inbox)
    assert got['r.svf'] == data_a
    others = unique_names(got, 'r', '.svf')
    assert len(others) == 1 and got[others[0]] == data_b, sorted(got)
    # rsync's temporary files are gone: renamed, not left behind.
    assert sorted(got) == sorted(['r.svf'] + others)


def _tar_of(tmp_path, name, data):
    src = tmp_path / 'tarsrc'
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    archive = tmp_path / 'archive.tar'
    assert run(['tar', '-C', str(src), '-cf', str(archive), name]).returncode == 0
    return str(archive)


def test_tar_extract_over_existing_name_keeps_both(m, payloads, tmp_path):
    """tar -x --overwrite opens the existing file with O_TRUNC: the
    extracted data goes to a unique name, the old message stays."""
    _, _, data_a, data_b = payloads
    write(os.path.join(m.mnt, 't.svf'), data_a)
    archive = _tar_of(tmp_path, 't.svf', data_b)

    proc = run(['tar', '-C', m.mnt, '--overwrite', '-xf', archive])
    assert proc.returncode == 0, proc.stderr

    got = contents(m.inbox)
    assert got['t.svf'] == data_a
    others = unique_names(got, 't', '.svf')
    assert len(others) == 1 and got[others[0]] == data_b, sorted(got)


def test_tar_extract_default_mode_over_existing_name(m, payloads, tmp_path):
    """GNU tar's default mode is not a truncating open: it tries
    O_CREAT|O_EXCL, gets EEXIST (R3) and then UNLINKS the old file itself
    before extracting. An explicit unlink is the one way a message may be
    removed (R3), so the old payload is gone exactly as on a plain
    directory; what the mount guarantees is that the extracted payload
    arrives whole and nothing else is touched. (Of `tar -x`, a standard
    tool that must not clobber (R3), that holds for --overwrite and
    --keep-old-files, tested here, not for tar's default unlink-first
    mode, which no filesystem can tell from a consumer's delete.)"""
    _, _, data_a, data_b = payloads
    write(os.path.join(m.mnt, 't.svf'), data_a)
    write(os.path.join(m.mnt, 'other.svf'), b'bystander')
    archive = _tar_of(tmp_path, 't.svf', data_b)

    # --keep-old-files: tar refuses and the old message stays.
    proc = run(['tar', '-C', m.mnt, '--keep-old-files', '-xf', archive])
    assert proc.returncode != 0
    assert contents(m.inbox) == {'t.svf': data_a, 'other.svf': b'bystander'}

    proc = run(['tar', '-C', m.mnt, '-xf', archive])
    assert proc.returncode == 0, proc.stderr
    got = contents(m.inbox)
    assert got['t.svf'] == data_b
    assert got['other.svf'] == b'bystander'
    assert sorted(got) == ['other.svf', 't.svf']


def test_dd_truncating_keeps_both(m, payloads):
    a, b, data_a, data_b = payloads
    write(os.path.join(m.mnt, 'x.svf'), data_a)

    proc = run(['dd', f'if={b}', f'of={os.path.join(m.mnt, "x.svf")}', 'bs=1000',
                'status=none'])
    assert proc.returncode == 0, proc.stderr

    got = contents(m.inbox)
    assert got['x.svf'] == data_a
    others = unique_names(got, 'x', '.svf')
    assert len(others) == 1 and got[others[0]] == data_b, sorted(got)


@pytest.mark.parametrize('shell', ['/bin/sh', '/bin/bash'])
def test_shell_noclobber_refuses_existing_name(m, shell):
    path = os.path.join(m.mnt, 'x.svf')
    write(path, b'original')

    proc = run([shell, '-c', 'set -C; echo replaced > "$1"', shell, path])

    assert proc.returncode != 0
    assert contents(m.inbox) == {'x.svf': b'original'}


def test_shell_noclobber_creates_new_name(m):
    path = os.path.join(m.mnt, 'new.svf')
    proc = run(['/bin/sh', '-c', 'set -C; echo fresh > "$1"', 'sh', path])
    assert proc.returncode == 0, proc.stderr
    assert contents(m.inbox) == {'new.svf': b'fresh\n'}


def test_python_open_x_on_existing_name_raises(m):
    path = os.path.join(m.mnt, 'x.svf')
    write(path, b'original')

    with pytest.raises(FileExistsError):
        open(path, 'x')
    with pytest.raises(OSError) as e:
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o644)
    assert e.value.errno == errno.EEXIST
    assert contents(m.inbox) == {'x.svf': b'original'}


def test_python_open_w_on_existing_name_keeps_both(m):
    path = os.path.join(m.mnt, 'x.svf')
    write(path, b'original')
    ino = os.stat(os.path.join(m.inbox, 'x.svf')).st_ino

    with open(path, 'w') as f:
        f.write('second')

    got = contents(m.inbox)
    assert got['x.svf'] == b'original'
    assert os.stat(os.path.join(m.inbox, 'x.svf')).st_ino == ino
    others = unique_names(got, 'x', '.svf')
    assert len(others) == 1 and got[others[0]] == b'second'
    # Through the mount the name still shows the old message: nothing was
    # clobbered in any cache either.
    assert read(path) == b'original'


def test_truncating_open_of_empty_file_writes_in_place(m, payloads):
    """Decided behaviour: truncating an empty file loses nothing, so the
    data goes into it under its own name."""
    a, _, data_a, _ = payloads
    open(os.path.join(m.inbox, 'x.svf'), 'wb').close()
    ino = os.stat(os.path.join(m.inbox, 'x.svf')).st_ino

    assert run(['cp', a, os.path.join(m.mnt, 'x.svf')]).returncode == 0

    assert contents(m.inbox) == {'x.svf': data_a}
    assert os.stat(os.path.join(m.inbox, 'x.svf')).st_ino == ino


def test_unique_name_keeps_extension_and_case(m):
    write(os.path.join(m.mnt, 'Q7WX2K9A.SVF'), b'one')
    write(os.path.join(m.mnt, 'Q7WX2K9A.SVF'), b'two')
    write(os.path.join(m.mnt, 'noext'), b'one')
    write(os.path.join(m.mnt, 'noext'), b'two')

    got = contents(m.inbox)
    upper = unique_names(got, 'Q7WX2K9A', '.SVF')
    plain = unique_names(got, 'noext', '')
    assert len(upper) == 1 and got[upper[0]] == b'two', sorted(got)
    assert len(plain) == 1 and got[plain[0]] == b'two', sorted(got)
    assert got['Q7WX2K9A.SVF'] == b'one' and got['noext'] == b'one'
    assert not any(n.startswith('.') for n in got)


# ====================================================== faithful passthrough

def test_lookup_and_stat_match_backing(m):
    os.mkdir(os.path.join(m.inbox, 'dir'))
    write(os.path.join(m.inbox, 'dir', 'f.svf'), b'12345')
    os.symlink('f.svf', os.path.join(m.inbox, 'dir', 'link'))

    for rel in ('dir', 'dir/f.svf'):
        assert same_attrs(os.stat(os.path.join(m.mnt, rel)), os.stat(os.path.join(m.inbox, rel))), rel
    assert same_attrs(os.lstat(os.path.join(m.mnt, 'dir/link')),
                      os.lstat(os.path.join(m.inbox, 'dir/link')))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mnt, 'dir', 'missing'))
    # Made behind the mount's back: seen at once (no stale negative entry).
    write(os.path.join(m.inbox, 'dir', 'missing'), b'now here')
    assert os.stat(os.path.join(m.mnt, 'dir', 'missing')).st_size == 8


def test_chmod(m):
    path = os.path.join(m.mnt, 'f')
    write(path, b'x')
    os.chmod(path, 0o640)
    assert stat.S_IMODE(os.stat(os.path.join(m.inbox, 'f')).st_mode) == 0o640
    os.chmod(path, 0o4755)
    assert stat.S_IMODE(os.stat(os.path.join(m.inbox, 'f')).st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4755
    os.mkdir(os.path.join(m.mnt, 'd'))
    os.chmod(os.path.join(m.mnt, 'd'), 0o2711)
    assert stat.S_IMODE(os.stat(os.path.join(m.inbox, 'd')).st_mode) == 0o2711


def test_chown(m):
    path = os.path.join(m.mnt, 'f')
    write(path, b'x')
    os.chown(path, 1234, 5678)
    st = os.stat(os.path.join(m.inbox, 'f'))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(path, -1, 42)
    st = os.stat(os.path.join(m.inbox, 'f'))
    assert (st.st_uid, st.st_gid) == (1234, 42)
    os.symlink('f', os.path.join(m.mnt, 'l'))
    os.lchown(os.path.join(m.mnt, 'l'), 777, 888)
    lst = os.lstat(os.path.join(m.inbox, 'l'))
    assert (lst.st_uid, lst.st_gid) == (777, 888)
    assert os.stat(os.path.join(m.inbox, 'f')).st_uid == 1234  # not followed


def test_explicit_truncate_is_allowed(m):
    path = os.path.join(m.mnt, 'f')
    write(path, b'0123456789')
    ino = os.stat(os.path.join(m.inbox, 'f')).st_ino

    os.truncate(path, 4)
    assert contents(m.inbox) == {'f': b'0123'}
    os.truncate(path, 6)
    assert contents(m.inbox) == {'f': b'0123\0\0'}
    with open(path, 'r+b') as f:
        f.truncate(1)
    assert contents(m.inbox) == {'f': b'0'}
    assert run(['truncate', '-s', '0', path]).returncode == 0
    assert contents(m.inbox) == {'f': b''}
    assert os.stat(os.path.join(m.inbox, 'f')).st_ino == ino


def test_utimens(m):
    path = os.path.join(m.mnt, 'f')
    write(path, b'x')
    atime, mtime = 1_000_000_123_456_789, 1_500_000_987_654_321
    os.utime(path, ns=(atime, mtime))
    st = os.stat(os.path.join(m.inbox, 'f'))
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    assert os.stat(path).st_mtime_ns == mtime

    before = time.time_ns()
    os.utime(path)   # UTIME_NOW
    st = os.stat(os.path.join(m.inbox, 'f'))
    assert st.st_mtime_ns >= before - 2_000_000_000
    # touch -m -d keeps atime
    assert run(['touch', '-m', '-d', '2001-02-03 04:05:06', path]).returncode == 0
    st2 = os.stat(os.path.join(m.inbox, 'f'))
    assert st2.st_atime_ns == st.st_atime_ns
    assert time.gmtime(st2.st_mtime)[:1] == (2001,)


def test_readdir_lists_backing_entries(m):
    os.mkdir(os.path.join(m.inbox, 'sub'))
    for i in range(50):
        write(os.path.join(m.inbox, f'm{i:03d}.svf'), b'x')
    os.symlink('m000.svf', os.path.join(m.inbox, 'lnk'))
    expected = sorted(e for e in os.listdir(m.inbox) if e != '.inboxfs')

    assert sorted(os.listdir(m.mnt)) == expected
    proc = run(['ls', '-1', '-A', m.mnt], text=True)
    assert proc.returncode == 0
    assert sorted(proc.stdout.split()) == expected
    types = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink())
             for e in os.scandir(m.mnt)}
    assert types['sub'] == (True, False) and types['lnk'] == (False, True)
    assert types['m000.svf'] == (False, False)


def test_readdirplus_ls_l_shows_right_sizes(m):
    sizes = {'a.svf': 0, 'b.svf': 1, 'c.svf': 4097, 'd.svf': 100_000}
    for name, size in sizes.items():
        write(os.path.join(m.inbox, name), b'z' * size)
    listing = run(['ls', '-l', '-n', '--time-style=+', m.mnt], text=True)
    assert listing.returncode == 0, listing.stderr
    seen = {}
    for line in listing.stdout.splitlines()[1:]:
        fields = line.split()
        seen[fields[-1]] = int(fields[4])
    assert seen == sizes

    # A write through the mount shows up at once in the next listing.
    write(os.path.join(m.mnt, 'a.svf'), b'grown', mode='ab')
    listing = run(['ls', '-l', '-n', '--time-style=+', m.mnt], text=True)
    seen = {l.split()[-1]: int(l.split()[4]) for l in listing.stdout.splitlines()[1:]}
    assert seen['a.svf'] == 5
    assert {e.name: e.stat().st_size for e in os.scandir(m.mnt)} == dict(sizes, **{'a.svf': 5})


def test_staging_directory_is_hidden(m):
    assert os.path.isdir(os.path.join(m.inbox, '.inboxfs')), 'the daemon made no staging dir'
    write(os.path.join(m.mnt, 'visible.svf'), b'x')

    assert os.listdir(m.mnt) == ['visible.svf']
    proc = run(['ls', '-a', '-1', m.mnt], text=True)
    assert sorted(proc.stdout.split()) == ['.', '..', 'visible.svf']
    hidden = os.path.join(m.mnt, '.inboxfs')
    for probe in (os.stat, os.lstat, os.listdir, os.rmdir):
        with pytest.raises(FileNotFoundError):
            probe(hidden)
    with pytest.raises(OSError):
        os.rename(os.path.join(m.mnt, 'visible.svf'), os.path.join(hidden, 'stolen'))
    assert os.path.isdir(os.path.join(m.inbox, '.inboxfs'))
    assert contents(m.inbox) == {'visible.svf': b'x'}


def test_open_read_write_append_fsync(m):
    path = os.path.join(m.mnt, 'f.svf')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, b'hello ') == 6
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    with open(path, 'ab') as f:
        f.write(b'world')
        f.flush()
        os.fsync(f.fileno())
    assert contents(m.inbox) == {'f.svf': b'hello world'}

    # A non-truncating open writes in place (only truncation is redirected).
    with open(path, 'r+b') as f:
        f.seek(6)
        f.write(b'WORLD')
    assert contents(m.inbox) == {'f.svf': b'hello WORLD'}

    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 5, 6) == b'WORLD'
        assert os.read(fd, 100) == b'hello WORLD'
    finally:
        os.close(fd)
    # A change behind the mount's back is read at once.
    write(os.path.join(m.inbox, 'f.svf'), b'changed', mode='ab')
    assert read(path) == b'hello WORLDchanged'


def test_create(m):
    old = os.umask(0)
    try:
        fd = os.open(os.path.join(m.mnt, 'new.svf'),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, b'created')
        os.close(fd)
        fd = os.open(os.path.join(m.mnt, 'plain.svf'), os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    finally:
        os.umask(old)
    st = os.stat(os.path.join(m.inbox, 'new.svf'))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(os.path.join(m.inbox, 'plain.svf')).st_mode) == 0o600
    assert contents(m.inbox) == {'new.svf': b'created', 'plain.svf': b''}


def test_mknod_fifo(m):
    path = os.path.join(m.mnt, 'pipe')
    os.mkfifo(path, 0o600)
    assert stat.S_ISFIFO(os.stat(os.path.join(m.inbox, 'pipe')).st_mode)
    assert stat.S_ISFIFO(os.stat(path).st_mode)

    # It works as a FIFO through the mount.
    reader = subprocess.Popen(['cat', path], stdout=subprocess.PIPE)
    try:
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, b'through the fifo')
        os.close(fd)
        out, _ = reader.communicate(timeout=TIMEOUT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert out == b'through the fifo'
    # A regular file by mknod too.
    os.mknod(os.path.join(m.mnt, 'reg'), 0o644 | stat.S_IFREG)
    assert stat.S_ISREG(os.stat(os.path.join(m.inbox, 'reg')).st_mode)


def test_mkdir(m):
    old = os.umask(0)
    try:
        os.mkdir(os.path.join(m.mnt, 'd'), 0o750)
        os.makedirs(os.path.join(m.mnt, 'd', 'e', 'f'))
    finally:
        os.umask(old)
    st = os.stat(os.path.join(m.inbox, 'd'))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert os.path.isdir(os.path.join(m.inbox, 'd', 'e', 'f'))
    with pytest.raises(FileExistsError):
        os.mkdir(os.path.join(m.mnt, 'd'))
    write(os.path.join(m.mnt, 'd', 'e', 'f', 'deep.svf'), b'deep')
    assert read(os.path.join(m.inbox, 'd', 'e', 'f', 'deep.svf')) == b'deep'


def test_rmdir(m):
    os.makedirs(os.path.join(m.inbox, 'd', 'e'))
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(m.mnt, 'd'))
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(os.path.join(m.mnt, 'd', 'e'))
    os.rmdir(os.path.join(m.mnt, 'd'))
    assert not os.path.exists(os.path.join(m.inbox, 'd'))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mnt, 'd'))


def test_unlink(m):
    write(os.path.join(m.inbox, 'gone.svf'), b'x')
    write(os.path.join(m.inbox, 'kept.svf'), b'y')
    os.unlink(os.path.join(m.mnt, 'gone.svf'))
    assert contents(m.inbox) == {'kept.svf': b'y'}
    with pytest.raises(FileNotFoundError):
        os.unlink(os.path.join(m.mnt, 'gone.svf'))
    # Unlinking an open file: its data stays readable through the handle.
    with open(os.path.join(m.mnt, 'kept.svf'), 'rb') as f:
        os.unlink(os.path.join(m.mnt, 'kept.svf'))
        assert f.read() == b'y'
    assert contents(m.inbox) == {}


def test_rename_within_directory(m):
    write(os.path.join(m.mnt, 'a.tmp'), b'data')
    ino = os.stat(os.path.join(m.inbox, 'a.tmp')).st_ino
    os.rename(os.path.join(m.mnt, 'a.tmp'), os.path.join(m.mnt, 'a.svf'))
    assert contents(m.inbox) == {'a.svf': b'data'}
    assert os.stat(os.path.join(m.inbox, 'a.svf')).st_ino == ino
    assert os.stat(os.path.join(m.mnt, 'a.svf')).st_ino == ino
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(m.mnt, 'a.tmp'))


def test_rename_across_directories(m):
    os.mkdir(os.path.join(m.mnt, 'd1'))
    os.mkdir(os.path.join(m.mnt, 'd2'))
    write(os.path.join(m.mnt, 'd1', 'f.svf'), b'moving')
    os.rename(os.path.join(m.mnt, 'd1', 'f.svf'), os.path.join(m.mnt, 'd2', 'f.svf'))
    assert contents(os.path.join(m.inbox, 'd1')) == {}
    assert contents(os.path.join(m.inbox, 'd2')) == {'f.svf': b'moving'}
    # A directory with its contents.
    os.rename(os.path.join(m.mnt, 'd2'), os.path.join(m.mnt, 'd1', 'inner'))
    assert contents(os.path.join(m.inbox, 'd1', 'inner')) == {'f.svf': b'moving'}
    assert not os.path.exists(os.path.join(m.inbox, 'd2'))
    assert read(os.path.join(m.mnt, 'd1', 'inner', 'f.svf')) == b'moving'


def test_rename_noreplace_gives_eexist(m):
    src, dst = os.path.join(m.mnt, 'src.svf'), os.path.join(m.mnt, 'dst.svf')
    write(src, b'source')
    write(dst, b'destination')

    assert renameat2(src, dst, RENAME_NOREPLACE) == errno.EEXIST
    assert contents(m.inbox) == {'src.svf': b'source', 'dst.svf': b'destination'}

    # mv -n (which uses RENAME_NOREPLACE) changes nothing either.
    run(['mv', '-n', src, dst])
    assert contents(m.inbox) == {'src.svf': b'source', 'dst.svf': b'destination'}

    # Onto a free name it renames.
    assert renameat2(src, os.path.join(m.mnt, 'free.svf'), RENAME_NOREPLACE) == 0
    assert contents(m.inbox) == {'free.svf': b'source', 'dst.svf': b'destination'}


def test_rename_exchange_swaps(m):
    a, b = os.path.join(m.mnt, 'a.svf'), os.path.join(m.mnt, 'b.svf')
    write(a, b'content of a')
    write(b, b'content of b')
    ino_a = os.stat(os.path.join(m.inbox, 'a.svf')).st_ino
    ino_b = os.stat(os.path.join(m.inbox, 'b.svf')).st_ino

    assert renameat2(a, b, RENAME_EXCHANGE) == 0

    assert contents(m.inbox) == {'a.svf': b'content of b', 'b.svf': b'content of a'}
    assert os.stat(os.path.join(m.inbox, 'a.svf')).st_ino == ino_b
    assert os.stat(a).st_ino == ino_b and os.stat(b).st_ino == ino_a
    assert read(a) == b'content of b'
    # A file and a directory across directories too.
    os.mkdir(os.path.join(m.mnt, 'dir'))
    assert renameat2(a, os.path.join(m.mnt, 'dir'), RENAME_EXCHANGE) == 0
    assert os.path.isdir(os.path.join(m.inbox, 'a.svf'))
    assert read(os.path.join(m.inbox, 'dir')) == b'content of b'
    assert renameat2(a, os.path.join(m.mnt, 'missing'), RENAME_EXCHANGE) == errno.ENOENT


def test_hard_link(m):
    a, b = os.path.join(m.mnt, 'a.svf'), os.path.join(m.mnt, 'b.svf')
    write(a, b'shared')
    os.link(a, b)

    sa, sb = os.stat(a), os.stat(b)
    assert sa.st_ino == sb.st_ino == os.stat(os.path.join(m.inbox, 'a.svf')).st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    assert os.stat(os.path.join(m.inbox, 'b.svf')).st_nlink == 2
    assert contents(m.inbox) == {'a.svf': b'shared', 'b.svf': b'shared'}
    with pytest.raises(FileExistsError):
        os.link(a, b)
    os.unlink(a)
    assert os.stat(b).st_nlink == 1
    assert contents(m.inbox) == {'b.svf': b'shared'}


def test_symlink_and_readlink(m):
    link = os.path.join(m.mnt, 'link')
    os.symlink('target.svf', link)
    os.symlink('/an/absolute/target', os.path.join(m.mnt, 'abs'))

    assert os.readlink(link) == 'target.svf'
    assert os.readlink(os.path.join(m.inbox, 'link')) == 'target.svf'
    assert os.readlink(os.path.join(m.mnt, 'abs')) == '/an/absolute/target'
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert stat.S_ISLNK(os.lstat(os.path.join(m.inbox, 'link')).st_mode)
    # Dangling until the target exists; then followed (by the kernel, for
    # the caller) to the file in the same directory.
    with pytest.raises(FileNotFoundError):
        read(link)
    write(os.path.join(m.mnt, 'target.svf'), b'pointed at')
    assert read(link) == b'pointed at'
    proc = run(['readlink', link], text=True)
    assert proc.stdout.strip() == 'target.svf'


def test_statfs_df(m):
    mine, backing = os.statvfs(m.mnt), os.statvfs(m.inbox)
    for key in ('f_bsize', 'f_frsize', 'f_blocks', 'f_files', 'f_namemax'):
        assert getattr(mine, key) == getattr(backing, key), key
    # Free space moves, but not by much between two calls.
    assert abs(mine.f_bfree - backing.f_bfree) * mine.f_frsize < 256 * MiB

    proc = run(['df', '-P', '-k', m.mnt], text=True)
    assert proc.returncode == 0, proc.stderr
    ref = run(['df', '-P', '-k', m.inbox], text=True)
    assert proc.stdout.splitlines()[1].split()[1] == ref.stdout.splitlines()[1].split()[1]
    assert proc.stdout.splitlines()[1].split()[-1] == os.path.realpath(m.mnt)


def test_fsyncdir(m):
    os.mkdir(os.path.join(m.mnt, 'd'))
    write(os.path.join(m.mnt, 'd', 'f'), b'x')
    for path in (m.mnt, os.path.join(m.mnt, 'd')):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
            os.fdatasync(fd)
        finally:
            os.close(fd)


def test_attributes_cached_for_a_second_at_most(m):
    """Attributes are cached (one GETATTR fewer per stat): a write through
    the mount shows at once, a change made behind it within the second."""
    path = os.path.join(m.mnt, 'grow.svf')
    backing = os.path.join(m.inbox, 'grow.svf')
    write(path, b'1234')
    assert os.stat(path).st_size == 4
    with open(path, 'ab') as f:
        f.write(b'5678')
    assert os.stat(path).st_size == 8
    with open(backing, 'ab') as f:
        f.write(b'behind the mount')
    start = time.monotonic()
    wait_until(lambda: os.stat(path).st_size == 24, timeout=5,
               what='the size changed behind the mount')
    assert time.monotonic() - start < 2.5
