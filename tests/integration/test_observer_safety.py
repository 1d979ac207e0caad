"""Observers are trusted with the whole inbox, not with more than the
kernel would give them (R3): a non-root
observer's write, truncate or chown clears set-user-ID and set-group-ID
bits as the kernel does; the file a truncating open writes "beside" an
existing one is created only where that observer could create a file; and
a directory renamed onto a directory follows POSIX, with no stale path
afterwards. Checked in the BACKING inbox."""

import errno
import os
import stat

import pytest

from helpers import errno_of, inbox_contents

OBS_UID = 60010        # a non-root observer (observers=root:60010)
SETID = stat.S_ISUID | stat.S_ISGID


@pytest.fixture
def m(mount_inboxfs):
    return mount_inboxfs(observers=f'root:{OBS_UID}')


def _backing_file(m, name, data, mode, uid=0, gid=0, sub=''):
    path = os.path.join(m.inbox, sub, name)
    with open(path, 'wb') as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


# ------------------------------------------------------ set-id bits (R3)

def _write_at(path, flags, data):
    fd = os.open(path, flags)
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize('flags', [os.O_WRONLY, os.O_RDWR], ids=['write-only', 'read-write'])
def test_a_non_root_observers_write_clears_setid(m, as_client, flags):
    """A setuid-root program rewritten by another observer is setuid no more
    (the write-only descriptor writes with direct I/O)."""
    path = _backing_file(m, 'prog', b'#!/bin/sh\necho original\n', 0o6777)
    as_client(OBS_UID).call(_write_at, os.path.join(m.mnt, 'prog'), flags, b'#!/bin/sh\necho evil!!!!\n')
    st = os.stat(path)
    assert st.st_mode & SETID == 0, oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o777
    with open(path, 'rb') as f:
        assert f.read() == b'#!/bin/sh\necho evil!!!!\n'


def test_a_non_root_observers_truncate_clears_setid(m, as_client):
    path = _backing_file(m, 'prog', b'#!/bin/sh\necho original\n', 0o4777)
    as_client(OBS_UID).call(os.truncate, os.path.join(m.mnt, 'prog'), 3)
    st = os.stat(path)
    assert st.st_mode & SETID == 0 and st.st_size == 3, oct(st.st_mode)


def test_a_non_root_observers_chown_clears_setid(m, as_client):
    path = _backing_file(m, 'prog', b'#!/bin/sh\n', 0o6755, uid=OBS_UID, gid=OBS_UID)
    as_client(OBS_UID).call(os.chown, os.path.join(m.mnt, 'prog'), OBS_UID, OBS_UID)
    st = os.stat(path)
    assert st.st_mode & SETID == 0, oct(st.st_mode)


def test_roots_write_keeps_setid(m):
    path = _backing_file(m, 'prog', b'#!/bin/sh\necho original\n', 0o4755)
    _write_at(os.path.join(m.mnt, 'prog'), os.O_WRONLY, b'#!/bin/sh\necho patched\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4755


# -------------------------------------------- where "beside" goes (R3)

def test_truncating_open_writes_beside_only_where_the_observer_may_create(m, as_client):
    os.mkdir(os.path.join(m.inbox, 'ro'))
    os.chmod(os.path.join(m.inbox, 'ro'), 0o755)
    path = _backing_file(m, 'f', b'precious', 0o666, sub='ro')
    obs = as_client(OBS_UID)
    # The kernel lets it open ro/f for writing, not create in ro/.
    assert obs.call(errno_of, os.open, os.path.join(m.mnt, 'ro', 'new'),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) == errno.EACCES
    proc = obs.run(f'echo x > {m.mnt}/ro/f')
    assert proc.returncode != 0
    assert b'denied' in proc.stderr, proc.stderr
    with open(path, 'rb') as f:
        assert f.read() == b'precious'
    assert sorted(os.listdir(os.path.join(m.inbox, 'ro'))) == ['f']
    # Where it may create, it writes beside as ever.
    os.chmod(os.path.join(m.inbox, 'ro'), 0o777)
    proc = obs.run(f'echo y > {m.mnt}/ro/f')
    assert proc.returncode == 0, proc.stderr
    found = inbox_contents(m.inbox, 'ro')
    assert found.pop('f') == b'precious'
    assert list(found.values()) == [b'y\n']


def test_beside_checks_the_observers_groups(m, as_client):
    """Group write permission counts, through a supplementary group too."""
    os.mkdir(os.path.join(m.inbox, 'grp'))
    os.chown(os.path.join(m.inbox, 'grp'), 0, 60011)
    os.chmod(os.path.join(m.inbox, 'grp'), 0o775)
    _backing_file(m, 'f', b'precious', 0o666, sub='grp')

    def as_member(path):
        os.setgroups([60011])
        os.setgid(OBS_UID)
        os.setuid(OBS_UID)
        with open(path, 'w') as f:
            f.write('member')

    pid = os.fork()
    if pid == 0:
        try:
            as_member(os.path.join(m.mnt, 'grp', 'f'))
            os._exit(0)
        except BaseException as e:  # noqa: B902 - any failure fails the test
            os.write(2, f'{e!r}\n'.encode())
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    found = inbox_contents(m.inbox, 'grp')
    assert found.pop('f') == b'precious'
    assert list(found.values()) == [b'member']


# --------------------------------------------- directory renames (R3)

def test_a_directory_renamed_onto_an_empty_directory_replaces_it(m):
    os.mkdir(os.path.join(m.mnt, 'A'))
    with open(os.path.join(m.mnt, 'A', 'x'), 'wb') as f:
        f.write(b'from A')
    os.mkdir(os.path.join(m.mnt, 'B'))
    # The kernel has B cached as the old, empty directory.
    assert os.listdir(os.path.join(m.mnt, 'B')) == []

    os.rename(os.path.join(m.mnt, 'A'), os.path.join(m.mnt, 'B'))

    assert sorted(os.listdir(m.inbox)) == ['.inboxfs', 'B']
    assert inbox_contents(m.inbox, 'B') == {'x': b'from A'}
    # No stale resolution: B/ is the moved directory, now and at once.
    with open(os.path.join(m.mnt, 'B', 'x'), 'rb') as f:
        assert f.read() == b'from A'
    with open(os.path.join(m.mnt, 'B', 'y'), 'wb') as f:
        f.write(b'new in B')
    assert inbox_contents(m.inbox, 'B') == {'x': b'from A', 'y': b'new in B'}
    assert sorted(os.listdir(m.inbox)) == ['.inboxfs', 'B']


def test_a_directory_renamed_onto_a_non_empty_directory_fails(m):
    for d in ('C', 'D'):
        os.mkdir(os.path.join(m.mnt, d))
        with open(os.path.join(m.mnt, d, 'x'), 'wb') as f:
            f.write(d.encode())
    assert errno_of(os.rename, os.path.join(m.mnt, 'C'), os.path.join(m.mnt, 'D')) in \
        (errno.ENOTEMPTY, errno.EEXIST)
    assert sorted(os.listdir(m.inbox)) == ['.inboxfs', 'C', 'D']
    assert inbox_contents(m.inbox, 'C') == {'x': b'C'}
    assert inbox_contents(m.inbox, 'D') == {'x': b'D'}
    with open(os.path.join(m.mnt, 'D', 'x'), 'rb') as f:
        assert f.read() == b'D'


def test_a_directory_renamed_onto_a_file_fails(m):
    os.mkdir(os.path.join(m.mnt, 'E'))
    with open(os.path.join(m.mnt, 'F'), 'wb') as f:
        f.write(b'a message')
    assert errno_of(os.rename, os.path.join(m.mnt, 'E'), os.path.join(m.mnt, 'F')) == \
        errno.ENOTDIR
    assert sorted(os.listdir(m.inbox)) == ['.inboxfs', 'E', 'F']
    assert inbox_contents(m.inbox) == {'F': b'a message'}


def test_a_file_renamed_onto_a_directory_fails(m):
    os.mkdir(os.path.join(m.mnt, 'G'))
    with open(os.path.join(m.mnt, 'g'), 'wb') as f:
        f.write(b'a message')
    assert errno_of(os.rename, os.path.join(m.mnt, 'g'), os.path.join(m.mnt, 'G')) == \
        errno.EISDIR
    assert sorted(os.listdir(m.inbox)) == ['.inboxfs', 'G', 'g']


def _truncating_open(path):
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))


def _fallocate(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, 8192)
    finally:
        os.close(fd)


@pytest.mark.parametrize('how', ['truncating-open', 'fallocate'])
def test_other_non_root_changes_clear_setid(m, as_client, how):
    data = b'' if how == 'truncating-open' else b'#!/bin/sh\n'
    path = _backing_file(m, 'prog', data, 0o6777)
    fn = _truncating_open if how == 'truncating-open' else _fallocate
    as_client(OBS_UID).call(fn, os.path.join(m.mnt, 'prog'))
    st = os.stat(path)
    assert st.st_mode & SETID == 0, oct(st.st_mode)


def _rewrite(path):
    with open(path, 'wb') as f:
        f.write(b'#!/bin/sh\necho rewritten\n')


def test_the_file_beside_a_setid_one_has_no_setid(m, as_client):
    """A truncating open of a non-empty file writes a new file beside it
    (R3); a non-root writer's new data is no set-ID program."""
    path = _backing_file(m, 'prog', b'#!/bin/sh\necho original\n', 0o6777)
    as_client(OBS_UID).call(_rewrite, os.path.join(m.mnt, 'prog'))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o6777      # untouched
    [new] = [n for n in os.listdir(m.inbox) if n.startswith('prog~')]
    st = os.stat(os.path.join(m.inbox, new))
    assert st.st_mode & SETID == 0 and st.st_uid == OBS_UID, oct(st.st_mode)
