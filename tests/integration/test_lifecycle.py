"""A drop's life through the real mount (core/drop.h): every path a drop
can take is checked against the one invariant — a writer's close()
succeeds if and only if its drop is delivered exactly once — in the
backing inbox, with shells, dup'd and inherited descriptors, mappings,
kills and a daemon out of descriptors."""

import errno
import mmap
import os
import shutil
import signal
import subprocess
import time

import pytest

import helpers
from helpers import inbox_contents, incomplete, wait_until


def _delivered(inbox):
    return inbox_contents(inbox)


@pytest.mark.parametrize('shell', ['/bin/sh', '/bin/bash'])
def test_shell_killed_after_redirected_write_is_not_delivered(mounted, client, shell):
    """R6, a killed writer: `exec 3>F; echo partial >&3; kill -9 $$`. The
    shell's redirections duplicate and close descriptors of the drop before
    and after its write; none of those closes is its writer's last, and the
    killed shell's is no acknowledgement: nothing delivered, every drop
    quarantined."""
    mounted.allow_log(r'quarantine|never saw a successful close')
    runs = 3
    for i in range(runs):
        path = os.path.join(mounted.mnt, f'S{i}.SVF')
        r = client.run([shell, '-c', f'exec 3>{path}; echo partial >&3; kill -9 $$'])
        assert r.returncode == -signal.SIGKILL, r
    wait_until(lambda: len(incomplete(mounted.inbox)) == runs, what='quarantined drops')
    assert _delivered(mounted.inbox) == {}
    assert all(v == b'partial\n' for v in incomplete(mounted.inbox).values())


@pytest.mark.parametrize('shell', ['/bin/sh', '/bin/bash'])
def test_shell_redirections_deliver_once_whole(mounted, client, shell):
    """The same shell idioms, ending normally: each message delivered once,
    whole, under its name."""
    m = mounted.mnt
    script = (f'exec 3>{m}/A.SVF; echo one >&3; echo two >&3; exec 3>&-; '
              f'echo hello > {m}/B.SVF; '
              f'{{ echo first; /bin/echo second; }} > {m}/C.SVF; '
              f'exec 4>{m}/D.SVF; exec 5>&4; exec 4>&-; echo late >&5; exec 5>&-')
    r = client.run([shell, '-c', script])
    assert r.returncode == 0, r
    assert _delivered(mounted.inbox) == {
        'A.SVF': b'one\ntwo\n', 'B.SVF': b'hello\n',
        'C.SVF': b'first\nsecond\n', 'D.SVF': b'late\n'}


def _dup_then_close(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'part1,')
    fd2 = os.dup(fd)
    os.close(fd)                   # not the last: fd2 still holds it
    os.write(fd2, b'part2')
    os.ftruncate(fd2, 11)
    os.close(fd2)


def test_dup_in_one_process_is_one_message(mounted, client):
    """A writer's close is its last only when it holds the drop on no
    other descriptor: a dup'd descriptor goes on writing the same message."""
    client.call(_dup_then_close, os.path.join(mounted.mnt, 'DUP.SVF'))
    assert _delivered(mounted.inbox) == {'DUP.SVF': b'part1,part2'}


def _tamper_after_publication(path):
    """The writer closes while a child it forked holds the descriptor on:
    the child's attempts to change the message, with their errnos."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, b'ORIGINAL CONTENT')
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.read(go_r, 1)       # until the writer has closed
            results = [(name, helpers.errno_of(fn)) for name, fn in [
                ('write', lambda: os.write(fd, b'TAMPERED')),
                ('pwrite', lambda: os.pwrite(fd, b'X', 0)),
                ('ftruncate', lambda: os.ftruncate(fd, 1)),
                ('fchmod', lambda: os.fchmod(fd, 0)),
                ('futimens', lambda: os.utime(fd, (0, 0))),
                ('truncate-proc', lambda: os.truncate(f'/proc/self/fd/{fd}', 1)),
                ('chmod-proc', lambda: os.chmod(f'/proc/self/fd/{fd}', 0))]]
            os.write(out_w, repr(results).encode())
        finally:
            os._exit(0)
    os.close(out_w)
    os.close(fd)                   # the writer's last close: delivered
    os.write(go_w, b'x')
    with os.fdopen(out_r, 'rb') as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return eval(text)  # noqa: S307 - our own child's repr of a list


def test_published_message_cannot_be_changed_by_its_writer(mounted, client):
    """R6: from its publication on, a message is the consumer's: a descriptor
    its writer's child still holds cannot write, truncate, chmod or touch it
    (EBADF; by /proc path, ENOENT)."""
    results = client.call(_tamper_after_publication, os.path.join(mounted.mnt, 'T.SVF'))
    for name, err in results:
        assert err in (errno.EBADF, errno.ENOENT), (name, err)
    st = os.stat(os.path.join(mounted.inbox, 'T.SVF'))
    assert _delivered(mounted.inbox) == {'T.SVF': b'ORIGINAL CONTENT'}
    assert st.st_mode & 0o7777 == 0o640
    assert st.st_mtime > time.time() - 600


def _map_shared(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'A' * 4096)
    try:
        mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def test_drops_cannot_be_mapped_shared(mounted, client):
    """R6, a published message is the consumer's: a shared mapping kept after
    the close could change what readers of the mount see (the kernel's cached
    pages) while the message on disk is the consumer's. Client drops bypass
    the page cache, and the kernel refuses them a shared mapping; readers
    through the mount see the bytes on disk."""
    err = client.call(_map_shared, os.path.join(mounted.mnt, 'MAP.SVF'))
    assert err == errno.ENODEV
    with open(os.path.join(mounted.mnt, 'MAP.SVF'), 'rb') as f:     # as observer
        assert f.read() == b'A' * 4096
    assert _delivered(mounted.inbox) == {'MAP.SVF': b'A' * 4096}


def test_directory_removed_while_drop_open(mounted, client):
    """R4, README "Decisions": a drop whose directory an observer removed while
    it was open is delivered at the top of the inbox, with a log line —
    where recovery after a crash would put it too."""
    mounted.allow_log(r'is gone; stored at the top')
    sub = os.path.join(mounted.mnt, 'sub')
    os.mkdir(sub)
    os.chmod(sub, 0o1777)
    s = client.session()
    fd = s.open(os.path.join(sub, 'GONE.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    s.write(fd, b'still delivered')
    os.rmdir(sub)                  # the observer; the drop is in staging
    s.close(fd)
    assert _delivered(mounted.inbox) == {'GONE.SVF': b'still delivered'}
    assert 'is gone; stored at the top as "GONE.SVF"' in mounted.log()


def test_directory_moved_out_of_the_inbox_while_drop_open(mounted, client):
    """A drop whose directory was moved out of the inbox (same filesystem)
    while it was open is delivered at the top of the inbox, never outside
    it, by the rule recovery and inboxfs-quarantine follow too (red on
    6a4ccfe: it went to the moved directory)."""
    mounted.allow_log(r'is not in the inbox; stored at the top')
    sub = os.path.join(mounted.mnt, 'sub')
    os.mkdir(sub)
    os.chmod(sub, 0o1777)
    s = client.session()
    fd = s.open(os.path.join(sub, 'MOVED.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    s.write(fd, b'still in the inbox')
    outside = os.path.join(mounted.base, 'outside')
    os.rename(os.path.join(mounted.inbox, 'sub'), outside)     # beneath the mount
    s.close(fd)
    assert os.listdir(outside) == []
    assert _delivered(mounted.inbox) == {'MOVED.SVF': b'still in the inbox'}
    assert 'is not in the inbox; stored at the top as "MOVED.SVF"' in mounted.log()


def _child_writes_after_parent_close(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'parent;')
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
            try:
                os.write(fd, b'child')
                code = 0
            except OSError as e:
                code = e.errno
        finally:
            os._exit(code)
    os.close(r)
    os.close(fd)
    os.write(w, b'x')
    os.close(w)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_writer_hands_descriptor_to_child_and_closes_first(mounted, client):
    """R6, README "Decisions": the writer's close is the end of its message.
    What it wrote by then is delivered; a child that inherited the
    descriptor and writes after it gets EBADF (on a plain directory the
    file would hold both)."""
    code = client.call(_child_writes_after_parent_close, os.path.join(mounted.mnt, 'H.SVF'))
    assert code == errno.EBADF
    assert _delivered(mounted.inbox) == {'H.SVF': b'parent;'}


def test_close_fails_when_the_daemon_is_out_of_descriptors(mounted, client, as_client):
    """R6, nothing swallowed: when the daemon cannot read /proc (out of
    descriptors), a close cannot tell how it came about: it fails, and the
    drop is not delivered. Whatever the close answered, the invariant
    holds."""
    mounted.allow_log(r'never saw|Too many open files|quarantine')
    b = as_client(60002).session()
    fd = b.open(os.path.join(mounted.mnt, 'B.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    b.write(fd, b'b' * 100)
    hog = client.session()
    fds, err = hog.call(helpers.hold_drops, os.path.join(mounted.mnt, 'HOG'), 60)
    assert err == 0
    # Now lower the daemon's soft limit to what it holds: nothing more opens.
    soft = subprocess.run(['prlimit', f'--pid={mounted.pid}', '--nofile', '--raw',
                           '--noheadings', '--output=SOFT'],
                          check=True, capture_output=True, text=True).stdout.strip()
    time.sleep(1.1)                # past the daemon's cache of who B is
    open_now = len(os.listdir(f'/proc/{mounted.pid}/fd'))
    subprocess.run(['prlimit', f'--pid={mounted.pid}', f'--nofile={open_now}:'], check=True)
    try:
        err = b.call(helpers.errno_of, os.close, fd)
    finally:
        subprocess.run(['prlimit', f'--pid={mounted.pid}', f'--nofile={soft}:'], check=True)
    delivered = _delivered(mounted.inbox)
    assert (err == 0) == ('B.SVF' in delivered), (err, sorted(delivered))
    for f in fds:
        assert hog.call(helpers.errno_of, os.close, f) == 0
    wait_until(lambda: len(_delivered(mounted.inbox)) == 60 + (err == 0),
               what="the hog's drops delivered")


def test_max_drops_caps_one_session_only(mount_inboxfs, client, as_client):
    """R12: past max_drops open drops, only that session's creates fail
    (EMFILE); another client creates and closes as usual."""
    m = mount_inboxfs(max_drops=20)
    hog = client.session()
    fds, err = hog.call(helpers.hold_drops, os.path.join(m.mnt, 'HOG'), 25)
    assert len(fds) == 20 and err == errno.EMFILE
    other = as_client(60002)
    other.call(helpers.create_excl, os.path.join(m.mnt, 'OTHER.SVF'), b'fine')
    for f in fds:
        assert hog.call(helpers.errno_of, os.close, f) == 0
    assert len(_delivered(m.inbox)) == 21
    # The slots are free again.
    fds, err = hog.call(helpers.hold_drops, os.path.join(m.mnt, 'AGAIN'), 5)
    assert err == 0
    for f in fds:
        hog.call(helpers.errno_of, os.close, f)


def test_descriptor_reserve(mount_inboxfs, client, as_client, monkeypatch):
    """R12: one client holding as many files as the daemon can open never
    makes another client's close fail: the daemon keeps descriptors in
    reserve for its own work."""
    monkeypatch.setattr(helpers, 'WRAPPER', ['prlimit', '--nofile=400:400'])
    m = mount_inboxfs(max_drops=0)
    b = as_client(60002).session()
    fd = b.open(os.path.join(m.mnt, 'B.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    b.write(fd, b'kept')
    hog = client.session()
    fds, err = hog.call(helpers.hold_drops, os.path.join(m.mnt, 'HOG'), 500)
    assert err == errno.EMFILE and 100 < len(fds) < 400
    assert b.call(helpers.errno_of, os.close, fd) == 0
    assert _delivered(m.inbox).get('B.SVF') == b'kept'
    for f in fds:
        assert hog.call(helpers.errno_of, os.close, f) == 0
    assert len(_delivered(m.inbox)) == len(fds) + 1


def _close_with_a_pathref(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b'pathref')
    ref = os.open(path, os.O_PATH)  # as Samba keeps one: no open file
    os.close(fd)
    try:
        return os.path.exists(path)
    finally:
        os.close(ref)


def test_an_o_path_descriptor_does_not_hold_a_drop_open(mounted, client):
    """Only open files count as the writer holding its drop elsewhere: an
    O_PATH descriptor (Samba's "pathref") cannot write, and the close of the
    last open file publishes the drop at once."""
    still_visible = client.call(_close_with_a_pathref, os.path.join(mounted.mnt, 'OP.SVF'))
    assert not still_visible
    assert _delivered(mounted.inbox) == {'OP.SVF': b'pathref'}


def test_unmount_while_another_mount_namespace_holds_the_mount(mount_inboxfs, client):
    """A mount namespace made while inboxfs is mounted (another test's
    `unshare -m`, run at the same time) holds a copy of the mount, and the
    kernel ends a FUSE connection only with its last mount: after
    fusermount3 -u here the daemon is never told. The teardown then stops
    it as systemctl would (SIGTERM, exit 0) instead of failing with
    'inboxfs did not exit after unmount' after its timeout: the flaky end
    of test_session_life, seen while test_ctdb's holders ran. A drop closed
    before is delivered once."""
    if shutil.which('unshare') is None:
        pytest.skip('needs unshare (util-linux)')
    m = mount_inboxfs()
    r = client.run(['/bin/sh', '-c', f'echo held > {m.mnt}/HELD.SVF'])
    assert r.returncode == 0, r
    holder = subprocess.Popen(['unshare', '--mount', '--propagation', 'private', '--',
                               'sleep', '600'], stdin=subprocess.DEVNULL)
    try:
        def holds():
            try:
                return any(x.point == m.mnt for x in helpers.mounts(holder.pid)) and \
                    os.readlink(f'/proc/{holder.pid}/ns/mnt') != \
                    os.readlink('/proc/self/ns/mnt')
            except OSError:
                return False
        wait_until(holds, what='the new namespace to hold the mount')
        started = time.monotonic()
        m.unmount()
        assert m.run.proc.returncode == 0
        assert time.monotonic() - started < helpers.TIMEOUT
        assert 'stopping on SIGTERM' in m.log()
    finally:
        helpers.stop_process(holder)
    assert _delivered(m.inbox) == {'HELD.SVF': b'held\n'}
