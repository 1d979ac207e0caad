"""Client sessions (R1, R2, R4, R7, R8): every
non-root requester process is a session with a private view of the inbox,
its creates never collide, and its drops reach the inbox only when closed,
whole. Everything is checked in the BACKING inbox, by content.

A session's life (threads, a reused pid, what an ended session leaves
behind) is in test_session_life.py."""

import errno
import os
import socket
import stat

from helpers import (CLIENT_UID, OTHER_UID, assert_delivered_once, create_excl,
                     errno_of, inbox_contents, incomplete, run_together, staged,
                     try_create_excl, wait_until)


# ------------------------------------------------------------------ (1) R1

def test_50_processes_create_the_same_name_at_once(mounted):
    path = os.path.join(mounted.mnt, 'K3J9QZ1M.SVF')
    # Half the clients share one uid (sessions are processes, not users),
    # the other half have a uid each.
    uids = [CLIENT_UID if i % 2 == 0 else 61000 + i for i in range(50)]
    payloads = [f'client {i} uid {uids[i]} '.encode() + os.urandom(3000 + i)
                for i in range(50)]

    results = run_together([(uids[i], try_create_excl, (path, payloads[i]))
                            for i in range(50)])

    failed = [(i, errno.errorcode.get(r, r)) for i, r in enumerate(results) if r]
    assert not failed, f'creates failed: {failed}'
    found = assert_delivered_once(mounted.inbox, payloads, ext='.SVF')
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
    assert_delivered_once(mounted.inbox, payloads, ext='.SVF')


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


# (5) R4, R6: a writer killed with its drop open is test_durability.py's
# test_writer_killed_mid_write_delivers_nothing.

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
    assert_delivered_once(mounted.inbox, [b'first', b'second'], ext='.SVF')


def test_same_name_twice_in_a_row_empty(mounted, client):
    """Empty drops are published at release (a moment after close); the
    name must be free again at close all the same."""
    path = os.path.join(mounted.mnt, 'EMPTY.SVF')
    client.call(_twice, path, b'', b'')
    found = wait_until(lambda: len(mounted.backing_files()) == 2 and inbox_contents(mounted.inbox),
                       what='two empty drops')
    assert list(found.values()) == [b'', b'']
    assert all(n.endswith('.SVF') for n in found)


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
