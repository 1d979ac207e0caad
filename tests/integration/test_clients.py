"""Client sessions (issue 3; DESIGN §2, §3, R1, R2, R4, R7, R8): every
non-root requester process is a session with a private view of the inbox,
its creates never collide, and its drops reach the inbox only when closed,
whole. Everything is checked in the BACKING inbox, by content."""

import errno
import os
import pickle
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback

import pytest

import helpers
from helpers import (CLIENT_UID, LONG, TIMEOUT, create_excl, drop_privileges, errno_of,
                     inbox_contents, incomplete, reap, run_together, staged, wait_until)

OTHER_UID = 60002


# ------------------------------------------------------------------ helpers

def assert_delivered_once(mount, payloads, ext=None):
    """Every payload is in the backing inbox exactly once, intact, and
    nothing else is; every name keeps the extension."""
    found = inbox_contents(mount.inbox)
    counts = {}
    for data in found.values():
        counts[data] = counts.get(data, 0) + 1
    missing = [p for p in payloads if p not in counts]
    twice = {p: n for p, n in counts.items() if n > 1}
    extra = [n for n, d in found.items() if d not in set(payloads)]
    assert not missing, f'{len(missing)} of {len(payloads)} payloads not delivered ' \
                        f'(inbox has {len(found)} files)'
    assert not twice, f'payloads delivered more than once: {list(twice.values())[:5]}'
    assert not extra, f'unexpected files in the inbox: {extra[:10]}'
    assert len(found) == len(payloads)
    if ext is not None:
        bad = [n for n in found if not n.endswith(ext)]
        assert not bad, f'names that lost the extension {ext}: {bad[:10]}'
    return found


def daemon_rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError(f'no VmRSS for pid {pid}')


def daemon_fds(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def daemon_fd_kinds(pid):
    """{target: count} of the daemon's descriptors, pipes and pidfds by kind."""
    kinds = {}
    for target in helpers.open_files(pid):
        if target.startswith('pipe:'):
            target = 'pipe'
        kinds[target] = kinds.get(target, 0) + 1
    return kinds


def _read_reply(fd, deadline, pid):
    buf = b''
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f'client process {pid} did not finish in time')
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    if not buf:
        raise AssertionError(f'client process {pid} died without an answer')
    return pickle.loads(buf)


def _try_create_excl(path, data):
    try:
        create_excl(path, data)
        return 0
    except OSError as e:
        return e.errno


# ------------------------------------------------------------------ (1) R1

def test_50_processes_create_the_same_name_at_once(mounted):
    path = os.path.join(mounted.mnt, 'K3J9QZ1M.SVF')
    # Half the clients share one uid (sessions are processes, not users),
    # the other half have a uid each.
    uids = [CLIENT_UID if i % 2 == 0 else 61000 + i for i in range(50)]
    payloads = [f'client {i} uid {uids[i]} '.encode() + os.urandom(3000 + i)
                for i in range(50)]

    results = run_together([(uids[i], _try_create_excl, (path, payloads[i]))
                            for i in range(50)])

    failed = [(i, errno.errorcode.get(r, r)) for i, r in enumerate(results) if r]
    assert not failed, f'creates failed: {failed}'
    found = assert_delivered_once(mounted, payloads, ext='.SVF')
    by_payload = {data: name for name, data in found.items()}
    for i, data in enumerate(payloads):
        st = os.stat(os.path.join(mounted.inbox, by_payload[data]))
        assert st.st_uid == uids[i]
    assert 'K3J9QZ1M.SVF' in found
    assert all(n == 'K3J9QZ1M.SVF' or n.startswith('K3J9QZ1M~') for n in found)
    assert staged(mounted.inbox) == []


def _tight_loop(path, n):
    payloads = []
    for i in range(n):
        data = f'drop {i} of {n} from {os.getpid()} '.encode() + os.urandom(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        payloads.append(data)
    return payloads


def test_one_process_drops_the_same_name_1000_times(mounted, client):
    path = os.path.join(mounted.mnt, 'Q7WX2K9A.SVF')

    payloads = client.call(_tight_loop, path, 1000, timeout=120)

    assert len(set(payloads)) == 1000
    assert_delivered_once(mounted, payloads, ext='.SVF')


# ------------------------------------------------------------- (3) R2

def _view(path):
    """What a session can learn about PATH."""
    return {
        'stat': errno_of(os.stat, path),
        'lstat': errno_of(os.lstat, path),
        'open_r': errno_of(lambda: os.close(os.open(path, os.O_RDONLY))),
        'open_w': errno_of(lambda: os.close(os.open(path, os.O_WRONLY))),
        'open_append': errno_of(lambda: os.close(os.open(path, os.O_WRONLY | os.O_APPEND))),
        'rename': errno_of(os.rename, path, path + '.stolen'),
        'unlink': errno_of(os.unlink, path),
        'access': os.access(path, os.F_OK),
        'listed': os.path.basename(path) in os.listdir(os.path.dirname(path)),
    }


HIDDEN = {'stat': errno.ENOENT, 'lstat': errno.ENOENT, 'open_r': errno.ENOENT,
          'open_w': errno.ENOENT, 'open_append': errno.ENOENT,
          'rename': errno.ENOENT, 'unlink': errno.ENOENT,
          'access': False, 'listed': False}


def test_sessions_are_isolated(mounted, as_client):
    mnt = mounted.mnt
    os.mkdir(os.path.join(mnt, 'shared'))          # by the observer
    # A name the consumer already holds: A's drop will be stored elsewhere.
    with open(os.path.join(mounted.inbox, 'TAKEN.SVF'), 'wb') as f:
        f.write(b'consumer file')
    a = as_client(CLIENT_UID).session()
    b = as_client(OTHER_UID).session()
    same_uid = as_client(CLIENT_UID).session()      # another process, same user

    fa1 = a.open(os.path.join(mnt, 'A1.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fa2 = a.open(os.path.join(mnt, 'TAKEN.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    a.write(fa1, b'secret one')
    a.write(fa2, b'secret two')

    # A sees its own open drops and the directories, nothing else.
    assert sorted(a.listdir(mnt)) == ['A1.SVF', 'TAKEN.SVF', 'shared']
    assert a.stat(os.path.join(mnt, 'A1.SVF')).st_size == 10
    # Nobody else learns anything of them, by the names A asked for.
    for other in (b, same_uid):
        assert sorted(other.listdir(mnt)) == ['shared']
        for name in ('A1.SVF', 'TAKEN.SVF'):
            assert other.call(_view, os.path.join(mnt, name)) == HIDDEN, name
    assert staged(mounted.inbox) and mounted.backing_files() == ['TAKEN.SVF']

    # A closes one: it leaves A's view too (linger=0) and is delivered.
    a.close(fa1)
    assert sorted(a.listdir(mnt)) == ['TAKEN.SVF', 'shared']
    assert a.call(_view, os.path.join(mnt, 'A1.SVF')) == HIDDEN
    a.close(fa2)
    assert sorted(a.listdir(mnt)) == ['shared']

    found = inbox_contents(mounted.inbox)
    assert found.pop('A1.SVF') == b'secret one'
    assert found.pop('TAKEN.SVF') == b'consumer file'
    [(stored, data)] = found.items()
    assert data == b'secret two'
    assert stored.startswith('TAKEN~') and stored.endswith('.SVF')

    # After publication, by the stored names, nobody but the observer sees them.
    for session in (a, b, same_uid):
        assert sorted(session.listdir(mnt)) == ['shared']
        for name in ('A1.SVF', 'TAKEN.SVF', stored):
            assert session.call(_view, os.path.join(mnt, name)) == HIDDEN, name
    # ... and nothing was renamed or removed by those attempts.
    assert sorted(inbox_contents(mounted.inbox)) == sorted(['A1.SVF', 'TAKEN.SVF', stored])

    # The observer sees every delivered drop through the mount, by content.
    assert sorted(os.listdir(mnt)) == sorted(['A1.SVF', 'TAKEN.SVF', stored, 'shared'])
    with open(os.path.join(mnt, stored), 'rb') as f:
        assert f.read() == b'secret two'


def test_readdir_shows_exactly_the_open_drops(mounted, as_client):
    mnt = mounted.mnt
    os.mkdir(os.path.join(mnt, 'd1'))
    os.chmod(os.path.join(mnt, 'd1'), 0o1777)
    for n in range(3):      # the consumer's files: never in a client's view
        with open(os.path.join(mounted.inbox, f'old{n}.SVF'), 'wb') as f:
            f.write(b'old')
    a = as_client(CLIENT_UID).session()
    b = as_client(OTHER_UID).session()

    fds = {}
    for name in ('X1.SVF', 'X2.SVF', 'X3.SVF'):
        fds[name] = a.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        a.write(fds[name], name.encode())
    fb = b.open(os.path.join(mnt, 'B.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    b.write(fb, b'b')
    sub = a.open(os.path.join(mnt, 'd1', 'IN.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    assert sorted(a.listdir(mnt)) == ['X1.SVF', 'X2.SVF', 'X3.SVF', 'd1']
    assert sorted(a.listdir(os.path.join(mnt, 'd1'))) == ['IN.SVF']
    assert sorted(b.listdir(mnt)) == ['B.SVF', 'd1']
    assert sorted(b.listdir(os.path.join(mnt, 'd1'))) == []

    a.close(fds.pop('X2.SVF'))
    assert sorted(a.listdir(mnt)) == ['X1.SVF', 'X3.SVF', 'd1']
    for fd in fds.values():
        a.close(fd)
    a.close(sub)
    b.close(fb)
    assert sorted(a.listdir(mnt)) == ['d1']
    assert sorted(b.listdir(mnt)) == ['d1']
    assert sorted(os.listdir(mnt)) == ['B.SVF', 'X1.SVF', 'X2.SVF', 'X3.SVF', 'd1',
                                       'old0.SVF', 'old1.SVF', 'old2.SVF']
    # The empty drop in d1 is published at release, a moment after close.
    wait_until(lambda: mounted.backing_files('d1') == ['IN.SVF'], what='empty drop in d1')


# --------------------------------------------------------------- (4) R4

def test_drop_is_invisible_in_the_inbox_until_closed(mounted, client):
    mnt = mounted.mnt
    part1, part2 = os.urandom(100_000), os.urandom(150_000)
    s = client.session()

    fd = s.open(os.path.join(mnt, 'BIG.DAT'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    s.write(fd, part1)
    assert mounted.backing_files() == []
    assert os.listdir(mnt) == []                   # not even the observer sees it
    [stage] = staged(mounted.inbox)
    with open(os.path.join(mounted.inbox, '.inboxfs', stage), 'rb') as f:
        assert f.read() == part1

    s.write(fd, part2)
    assert mounted.backing_files() == []
    s.close(fd)

    # close() returned: the drop is there, whole, at once.
    assert inbox_contents(mounted.inbox) == {'BIG.DAT': part1 + part2}
    assert staged(mounted.inbox) == []


# --------------------------------------------------------- (5) R4, R6

KILLED_WRITER = r'''
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b'P' * 65536)
sys.stdout.write('written\n')
sys.stdout.flush()
sys.stdin.read()          # parked until killed
'''


def test_client_killed_mid_write_delivers_nothing(mounted, client):
    proc = client.popen([sys.executable, '-c', KILLED_WRITER,
                         os.path.join(mounted.mnt, 'KILLED.SVF')],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready = select.select([proc.stdout], [], [], TIMEOUT)[0]
        assert ready and proc.stdout.readline() == b'written\n', 'writer did not start'
        assert len(staged(mounted.inbox)) == 1
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        helpers.stop_process(proc, sig=signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()

    # The kernel's close of a dead writer's file is no acknowledgement.
    found = wait_until(lambda: incomplete(mounted.inbox), what='the partial drop in incomplete/')
    assert list(found.values()) == [b'P' * 65536]
    assert mounted.backing_files() == []
    assert staged(mounted.inbox) == []
    time.sleep(0.2)                                # nothing shows up late either
    assert mounted.backing_files() == []


# ------------------------------------------------------------ (6) R7, R8

def _special_files(mnt):
    own = os.path.join(mnt, 'OWN.SVF')
    fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock_err = errno_of(sock.bind, os.path.join(mnt, 'sock'))
        finally:
            sock.close()
        return {
            'symlink': errno_of(os.symlink, 'OWN.SVF', os.path.join(mnt, 'link')),
            'symlink_abs': errno_of(os.symlink, '/etc/passwd', os.path.join(mnt, 'abs')),
            'link': errno_of(os.link, own, os.path.join(mnt, 'hard.SVF')),
            'link_dir': errno_of(os.link, own, os.path.join(mnt, 'sub', 'hard.SVF')),
            'mkfifo': errno_of(os.mkfifo, os.path.join(mnt, 'fifo')),
            'mknod_fifo': errno_of(os.mknod, os.path.join(mnt, 'fifo2'), stat.S_IFIFO | 0o644),
            'mknod_chr': errno_of(os.mknod, os.path.join(mnt, 'null'),
                                  stat.S_IFCHR | 0o666, os.makedev(1, 3)),
            'mknod_blk': errno_of(os.mknod, os.path.join(mnt, 'blk'),
                                  stat.S_IFBLK | 0o666, os.makedev(7, 0)),
            'socket': sock_err,
        }
    finally:
        os.close(fd)


def test_special_files_are_refused(mounted, client):
    os.mkdir(os.path.join(mounted.mnt, 'sub'))
    os.chmod(os.path.join(mounted.mnt, 'sub'), 0o1777)
    result = client.call(_special_files, mounted.mnt)

    assert result == {k: errno.EPERM for k in result}, {
        k: errno.errorcode.get(v, v) for k, v in result.items()}
    # Only the drop that was opened is there.
    wait_until(lambda: mounted.backing_files() == ['OWN.SVF'], what='the empty drop')
    entries = sorted(os.listdir(mounted.inbox))
    assert entries == ['.inboxfs', 'OWN.SVF', 'sub'], entries
    assert os.listdir(os.path.join(mounted.inbox, 'sub')) == []


def _directories(mnt):
    new = os.path.join(mnt, 'newdir')
    os.mkdir(new, 0o755)
    st = os.stat(new)
    return {
        'uid': st.st_uid,
        'is_dir': stat.S_ISDIR(st.st_mode),
        'listed': 'newdir' in os.listdir(mnt),
        'nested': errno_of(os.mkdir, os.path.join(new, 'nested')),
        'rmdir_own': errno_of(os.rmdir, new),
        'rmdir_nested': errno_of(os.rmdir, os.path.join(new, 'nested')),
        'rmdir_observers': errno_of(os.rmdir, os.path.join(mnt, 'byroot')),
        'rename_own': errno_of(os.rename, new, os.path.join(mnt, 'renamed')),
        'rename_observers': errno_of(os.rename, os.path.join(mnt, 'byroot'),
                                     os.path.join(mnt, 'renamed')),
        'rename_into': errno_of(os.rename, os.path.join(new, 'nested'),
                                os.path.join(mnt, 'byroot', 'nested')),
        'mkdir_exists': errno_of(os.mkdir, os.path.join(mnt, 'byroot')),
    }


def test_directories_for_clients(mount_inboxfs, as_client):
    mounted = mount_inboxfs(client_mkdir='yes')   # R7: off by default
    os.mkdir(os.path.join(mounted.mnt, 'byroot'))
    os.chmod(os.path.join(mounted.mnt, 'byroot'), 0o1777)
    result = as_client(CLIENT_UID).call(_directories, mounted.mnt)

    assert result == {
        'uid': CLIENT_UID, 'is_dir': True, 'listed': True, 'nested': 0,
        'rmdir_own': errno.EPERM, 'rmdir_nested': errno.EPERM,
        'rmdir_observers': errno.EPERM, 'rename_own': errno.EPERM,
        'rename_observers': errno.EPERM, 'rename_into': errno.EPERM,
        'mkdir_exists': errno.EEXIST,
    }
    st = os.stat(os.path.join(mounted.inbox, 'newdir'))
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == CLIENT_UID
    assert os.path.isdir(os.path.join(mounted.inbox, 'newdir', 'nested'))
    assert os.path.isdir(os.path.join(mounted.inbox, 'byroot'))
    assert not os.path.exists(os.path.join(mounted.inbox, 'renamed'))
    # Directories are shared: another client sees and uses them.
    other = as_client(OTHER_UID)
    assert sorted(other.call(os.listdir, mounted.mnt)) == ['byroot', 'newdir']
    other.call(create_excl, os.path.join(mounted.mnt, 'byroot', 'M.SVF'), b'deep')
    with open(os.path.join(mounted.inbox, 'byroot', 'M.SVF'), 'rb') as f:
        assert f.read() == b'deep'


def test_client_listing_finds_subdirectories_by_link_count(mounted, as_client):
    """A client's listing reads the backing directory only when its link
    count shows a visible subdirectory (the hidden staging directory is
    one link): files alone list as nothing; a directory made behind the
    mount shows at once, and is gone once removed."""
    for i in range(50):
        with open(os.path.join(mounted.inbox, f'F{i}.SVF'), 'wb') as f:
            f.write(b'foreign')
    client = as_client(CLIENT_UID)
    assert client.call(os.listdir, mounted.mnt) == []
    os.mkdir(os.path.join(mounted.inbox, 'late'))
    assert client.call(os.listdir, mounted.mnt) == ['late']
    os.mkdir(os.path.join(mounted.inbox, 'late', 'deeper'))
    assert client.call(os.listdir, os.path.join(mounted.mnt, 'late')) == ['deeper']
    os.rmdir(os.path.join(mounted.inbox, 'late', 'deeper'))
    os.rmdir(os.path.join(mounted.inbox, 'late'))
    assert client.call(os.listdir, mounted.mnt) == []


def _mknod_regular(path):
    os.mknod(path, stat.S_IFREG | 0o644)
    return errno_of(os.stat, path)


def test_mknod_of_a_regular_file_is_a_create(mounted, client):
    """R1: mknod of a regular file is a create: it never collides and is
    delivered (empty) at once."""
    with open(os.path.join(mounted.inbox, 'N.SVF'), 'wb') as f:
        f.write(b'there before')
    assert client.call(_mknod_regular, os.path.join(mounted.mnt, 'N.SVF')) == errno.ENOENT
    found = inbox_contents(mounted.inbox)
    assert found.pop('N.SVF') == b'there before'
    [(name, data)] = found.items()
    assert data == b'' and name.startswith('N~') and name.endswith('.SVF')


# ----------------------------------------------------- (7) inode numbers

def _inode_through_life(mnt, name):
    fd = os.open(os.path.join(mnt, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    at_create = os.fstat(fd).st_ino
    by_name = os.stat(os.path.join(mnt, name)).st_ino
    os.write(fd, b'inode check')
    after_write = os.fstat(fd).st_ino
    os.close(fd)
    return at_create, by_name, after_write


def test_drop_keeps_its_inode_number(mounted, client):
    with open(os.path.join(mounted.inbox, 'TAKEN.SVF'), 'wb') as f:
        f.write(b'x')
    for name in ('FREE.SVF', 'TAKEN.SVF'):       # published as asked, and rewritten
        before = set(mounted.backing_files())
        at_create, by_name, after_write = client.call(_inode_through_life, mounted.mnt, name)
        [stored] = set(mounted.backing_files()) - before
        assert at_create == by_name == after_write
        assert os.stat(os.path.join(mounted.inbox, stored)).st_ino == at_create, stored
        assert os.stat(os.path.join(mounted.mnt, stored)).st_ino == at_create, stored


# ------------------------------------------------ (8) rename and unlink

def _rename_open_drop(mnt):
    fd = os.open(os.path.join(mnt, 'TMP1234.TMP'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'renamed while open')
    os.rename(os.path.join(mnt, 'TMP1234.TMP'), os.path.join(mnt, 'FINAL.SVF'))
    seen = (sorted(os.listdir(mnt)),
            errno_of(os.stat, os.path.join(mnt, 'TMP1234.TMP')),
            os.stat(os.path.join(mnt, 'FINAL.SVF')).st_size)
    os.write(fd, b' and more')
    os.close(fd)
    return seen


def _unlink_open_drop(mnt):
    path = os.path.join(mnt, 'GONE.SVF')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'never to be seen')
    os.unlink(path)
    seen = (os.listdir(mnt), errno_of(os.stat, path))
    os.write(fd, b' still writing')
    os.close(fd)
    # The name is free again at once.
    create_excl(path, b'second, kept')
    return seen


def test_rename_of_own_open_drop(mounted, client):
    seen = client.call(_rename_open_drop, mounted.mnt)

    assert seen == (['FINAL.SVF'], errno.ENOENT, len(b'renamed while open'))
    assert inbox_contents(mounted.inbox) == {'FINAL.SVF': b'renamed while open and more'}
    assert staged(mounted.inbox) == []


def test_unlink_of_own_open_drop(mounted, client):
    seen = client.call(_unlink_open_drop, mounted.mnt)

    assert seen == ([], errno.ENOENT)
    assert inbox_contents(mounted.inbox) == {'GONE.SVF': b'second, kept'}
    wait_until(lambda: staged(mounted.inbox) == [], what='the unlinked drop to leave staging')
    assert incomplete(mounted.inbox) == {}


# --------------------------------- R4: one open file, several descriptors

def test_shell_command_group_redirection_is_delivered_whole(mounted, client):
    """`{ a; b; c; } > FILE`: the shell opens FILE once; an external
    command in the group inherits the descriptor and closes it when it
    exits (a FLUSH of the same open file). That is not the writer's last
    close: the drop must be published whole when the shell closes it."""
    path = os.path.join(mounted.mnt, 'SH.SVF')
    proc = client.run(f'{{ echo first; /bin/echo second; echo third; }} > {path}')

    assert proc.returncode == 0, proc.stderr.decode()
    assert inbox_contents(mounted.inbox) == {'SH.SVF': b'first\nsecond\nthird\n'}


# ------------------------------------------- (9) R1 within one client

def _twice(path, first, second):
    out = []
    for data in (first, second):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if data:
            os.write(fd, data)
        os.close(fd)
        out.append(os.getpid())
    return out


def test_same_name_twice_in_a_row(mounted, client):
    path = os.path.join(mounted.mnt, 'AGAIN.SVF')
    client.call(_twice, path, b'first', b'second')
    assert_delivered_once(mounted, [b'first', b'second'], ext='.SVF')


def test_same_name_twice_in_a_row_empty(mounted, client):
    """Empty drops are published at release (a moment after close); the
    name must be free again at close all the same."""
    path = os.path.join(mounted.mnt, 'EMPTY.SVF')
    client.call(_twice, path, b'', b'')
    found = wait_until(lambda: len(mounted.backing_files()) == 2 and inbox_contents(mounted.inbox),
                       what='two empty drops')
    assert list(found.values()) == [b'', b'']
    assert all(n.endswith('.SVF') for n in found)


# ------------------------------------------------------ (10) memory

def _spawn_drops(path, uids, first, count, concurrency=32, timeout=TIMEOUT * 30):
    """COUNT short-lived client processes, CONCURRENCY at a time, each
    dropping payload b'mem N' at PATH. Returns the payloads. Children are
    waited for by pidfd, never with waitpid(-1) (the daemon is our child too)."""
    running = {}                 # pidfd -> (pid, n)
    failures = []
    poller = select.poll()
    deadline = time.monotonic() + timeout
    n = first
    try:
        while n < first + count or running:
            while n < first + count and len(running) < concurrency:
                data = f'mem {n} '.encode() + b'x' * (n % 50)
                pid = os.fork()
                if pid == 0:
                    code = 0
                    try:
                        drop_privileges(uids[n % len(uids)])
                        create_excl(path, data)
                    except OSError as e:
                        code = e.errno or 255
                    except BaseException:  # noqa: B902
                        code = 255
                    os._exit(code)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, n)
                poller.register(pidfd, select.POLLIN)
                n += 1
            for pidfd, _ in poller.poll(1000):
                pid, num = running.pop(pidfd)
                poller.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    failures.append((num, os.waitstatus_to_exitcode(status)))
            if time.monotonic() > deadline:
                raise TimeoutError(f'{n - first - len(running)} of {count} client '
                                   'processes done in time')
    finally:
        # A child stuck in a FUSE request dies only when the daemon answers:
        # reap what dies within the timeout, leave the rest to the teardown.
        for pidfd, (pid, _) in running.items():
            os.kill(pid, signal.SIGKILL)
        for pidfd, (pid, _) in running.items():
            if select.select([pidfd], [], [], TIMEOUT)[0]:
                os.waitpid(pid, 0)
            os.close(pidfd)
    assert not failures, f'{len(failures)} drops failed, e.g. {failures[:5]}'
    return [f'mem {i} '.encode() + b'x' * (i % 50) for i in range(first, first + count)]


def _settled(pid, interval=0.3):
    """(rss KiB, fd count) once the fd count has stopped moving."""
    last = daemon_fds(pid)
    for _ in range(50):
        time.sleep(interval)
        now = daemon_fds(pid)
        if now == last:
            break
        last = now
    return daemon_rss_kib(pid), last


def test_short_lived_clients_leave_no_trace(mounted):
    """R12 / issue 3: sessions end with their processes and leave neither
    memory nor descriptors behind (pidfds, nodes of published drops)."""
    if helpers.WRAPPER:
        pytest.skip('daemon memory is not measurable under INBOXFS_WRAPPER')
    pid = mounted.pid
    path = os.path.join(mounted.mnt, 'MEM.SVF')
    uids = [CLIENT_UID, OTHER_UID, 60003, 60004]
    count = 10_000 if LONG else 2_000
    at_start = daemon_fd_kinds(pid)

    # Warm-up: libfuse's worker threads (no descriptors of their own: no
    # splice pipes), malloc arenas and the like.
    payloads = _spawn_drops(path, uids, 0, 500)
    rss0, _ = _settled(pid)

    def leftovers():
        """Descriptors other than those at start: pidfds of ended sessions,
        files of published drops, pipes of worker threads."""
        now = daemon_fd_kinds(pid)
        return {k: n - at_start.get(k, 0) for k, n in now.items() if n != at_start.get(k, 0)}

    try:
        wait_until(lambda: not leftovers(), timeout=TIMEOUT, what='warm-up sessions to end')
    except TimeoutError:
        raise AssertionError(f'after the warm-up the daemon holds {leftovers()} '
                             'more than at start') from None

    payloads += _spawn_drops(path, uids, 500, count)

    # Sessions end when their process exits (the reaper may lag a little).
    try:
        wait_until(lambda: not leftovers(), timeout=TIMEOUT * 2,
                   what='the daemon fd count to return')
    except TimeoutError:
        raise AssertionError(f'after {count} clients the daemon holds {leftovers()} '
                             'more than at start: sessions survive their processes') from None
    # Measured here: about +150 KiB over 10,000 clients, flat after that
    # (malloc settling). 1 MiB over 2,000 clients catches a leak of half
    # a KiB per drop; the long run holds issue 3's "within 10%".
    limit = rss0 + (max(rss0 // 10, 256) if LONG else 1024)
    # AddressSanitizer keeps freed memory in quarantine (up to 256 MiB) to
    # catch use-after-free: its RSS says nothing about leaks, which its
    # LeakSanitizer reports at exit instead (the fixture fails on that).
    if not _sanitized(pid):
        try:
            wait_until(lambda: daemon_rss_kib(pid) <= limit, timeout=TIMEOUT,
                       what='daemon memory to settle')
        except TimeoutError:
            raise AssertionError(f'daemon VmRSS {daemon_rss_kib(pid)} KiB after {count} '
                                 f'clients, {rss0} KiB after warm-up (limit {limit} KiB)') from None
    assert_delivered_once(mounted, payloads, ext='.SVF')


def _sanitized(pid):
    with open(f'/proc/{pid}/maps') as f:
        return 'libasan' in f.read()


# -------------------------------------------------- (11) staging hidden

def _look_for_staging(mnt):
    top = os.path.join(mnt, '.inboxfs')
    return {
        'listed': '.inboxfs' in os.listdir(mnt),
        'stat': errno_of(os.stat, top),
        'listdir': errno_of(os.listdir, top),
        'incomplete': errno_of(os.stat, os.path.join(top, 'incomplete')),
        'open': errno_of(lambda: os.close(os.open(top, os.O_RDONLY | os.O_DIRECTORY))),
        'chdir': errno_of(os.chdir, top),
    }


def test_staging_is_hidden_from_clients(mounted, client):
    s = client.session()
    fd = s.open(os.path.join(mounted.mnt, 'OPEN.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    s.write(fd, b'staged now')               # so that staging is not empty
    try:
        assert s.call(_look_for_staging, mounted.mnt) == {
            'listed': False, 'stat': errno.ENOENT, 'listdir': errno.ENOENT,
            'incomplete': errno.ENOENT, 'open': errno.ENOENT, 'chdir': errno.ENOENT}
        # R4: hidden from every view, the observer's too.
        assert _look_for_staging(mounted.mnt) == {
            'listed': False, 'stat': errno.ENOENT, 'listdir': errno.ENOENT,
            'incomplete': errno.ENOENT, 'open': errno.ENOENT, 'chdir': errno.ENOENT}
        # Nor can a client create a name there.
        assert errno_of(s.call, create_excl, os.path.join(mounted.mnt, '.inboxfs', 'x'),
                        b'') == errno.ENOENT
    finally:
        s.close(fd)
    assert inbox_contents(mounted.inbox) == {'OPEN.SVF': b'staged now'}


# ------------------------------------- issue 3 item 8: threads of a session

def _threads_share_a_session(mnt):
    path = os.path.join(mnt, 'THREADS.SVF')
    results = {}
    fd_box = []
    created = threading.Event()

    def creator():
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b'from many threads')
        os.setxattr(fd, 'user.DOSATTRIB', b'set by the creator thread')
        fd_box.append(fd)
        created.set()

    def watcher(k):
        created.wait(TIMEOUT)
        results[f'stat{k}'] = os.stat(path).st_size
        results[f'list{k}'] = os.listdir(mnt)
        try:
            results[f'xattr{k}'] = os.getxattr(path, 'user.DOSATTRIB')
        except OSError as e:
            results[f'xattr{k}'] = e.errno

    t = threading.Thread(target=creator)
    t.start()
    t.join(TIMEOUT)
    watchers = [threading.Thread(target=watcher, args=(k,)) for k in range(4)]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join(TIMEOUT)
    renamer = threading.Thread(target=lambda: results.setdefault(
        'rename', errno_of(os.rename, path, os.path.join(mnt, 'RENAMED.SVF'))))
    renamer.start()
    renamer.join(TIMEOUT)
    results['after'] = os.listdir(mnt)
    closer = threading.Thread(target=os.close, args=(fd_box[0],))
    closer.start()
    closer.join(TIMEOUT)
    return results


def test_threads_of_one_process_share_its_session(mounted, client):
    results = client.call(_threads_share_a_session, mounted.mnt)

    for k in range(4):
        assert results[f'stat{k}'] == len(b'from many threads')
        assert results[f'list{k}'] == ['THREADS.SVF']
        assert results[f'xattr{k}'] == b'set by the creator thread'
    assert results['rename'] == 0
    assert results['after'] == ['RENAMED.SVF']
    assert inbox_contents(mounted.inbox) == {'RENAMED.SVF': b'from many threads'}
    assert os.getxattr(os.path.join(mounted.inbox, 'RENAMED.SVF'), 'user.DOSATTRIB') == \
        b'set by the creator thread'


# ------------------------------------- issue 3: a reused pid starts afresh

def _fork_with_pid(target, fn, uid, attempts=50):
    """Run fn() as UID in a child process whose pid is TARGET (the kernel
    is asked through ns_last_pid; other processes may take it first, so
    it is tried again). Returns fn's result, or None if the pid was never
    obtained."""
    for _ in range(attempts):
        r, w = os.pipe()
        try:
            with open('/proc/sys/kernel/ns_last_pid', 'w') as f:
                f.write(str(target - 1))
        except OSError:
            os.close(r)
            os.close(w)
            return None
        pid = os.fork()
        if pid == 0:
            os.close(r)
            if os.getpid() != target:
                os._exit(0)
            try:
                drop_privileges(uid)
                reply = ('ok', fn())
            except BaseException as e:  # noqa: B902
                reply = ('err', e, traceback.format_exc())
            os.write(w, pickle.dumps(reply))
            os._exit(0)
        os.close(w)
        try:
            if pid != target:
                continue
            reply = _read_reply(r, time.monotonic() + TIMEOUT, pid)
            if reply[0] != 'ok':
                reply[1].add_note(reply[2])
                raise reply[1]
            return reply[1]
        finally:
            os.close(r)
            reap(pid)
    return None


def test_reused_pid_does_not_inherit_a_dead_session(mounted):
    """Process A creates a drop, hands the descriptor to its child and
    exits with the drop still open. A new process that gets A's pid is a
    new session: it does not see A's drop, and may create the name."""
    path = os.path.join(mounted.mnt, 'PIDREUSE.SVF')
    info_r, info_w = os.pipe()       # A -> us: the keeper is ready
    go_r, go_w = os.pipe()           # us -> keeper: finish now
    done_r, done_w = os.pipe()       # keeper -> us: closed
    a = os.fork()
    if a == 0:
        try:
            for fd in (info_r, go_w, done_r):
                os.close(fd)
            drop_privileges(CLIENT_UID)
            # Nothing written yet: A's exit (a FLUSH of the shared open
            # file) then does not count as the writer's last word.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if os.fork() == 0:                  # the keeper
                os.close(info_w)
                os.read(go_r, 1)
                os.write(fd, b'created by A, written by its child')
                os.close(fd)
                os.write(done_w, b'.')
                os._exit(0)
            os.write(info_w, b'.')
        finally:
            os._exit(0)
    for fd in (info_w, go_r, done_w):
        os.close(fd)
    try:
        assert select.select([info_r], [], [], TIMEOUT)[0] and os.read(info_r, 1) == b'.'
        reap(a)                                   # A is gone, its drop still open

        def reborn():
            return (errno_of(os.stat, path), os.listdir(mounted.mnt),
                    _try_create_excl(path, b'from the reused pid'))
        seen = _fork_with_pid(a, reborn, CLIENT_UID)
        if seen is None:
            pytest.skip(f'could not get pid {a} again (ns_last_pid)')
        assert seen == (errno.ENOENT, [], 0)
    finally:
        os.close(go_w)                            # the keeper finishes
        ready = select.select([done_r], [], [], TIMEOUT)[0]
        os.close(done_r)
        os.close(info_r)
    assert ready, 'the keeper did not finish'
    assert_delivered_once(mounted, [b'created by A, written by its child', b'from the reused pid'],
                          ext='.SVF')
