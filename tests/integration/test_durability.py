"""One drop's durability (R5, R6): with sync=close its data
and its directories are fsynced, as strace sees the daemon do it, before
the writer's close() returns; a writer killed mid-write, or whose SMB
connection is torn down mid-write, delivers nothing. Checked in the
BACKING inbox, by content (helpers/messages.py).

The crash storm and the full disk are in test_faults.py."""

import errno
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

import helpers
from helpers import (STAGING, TIMEOUT, assert_quarantine_accounted, inbox_files, incomplete,
                     kill_writer, message, message_id, read_file, read_stats, reap_all, staged,
                     staging_area, stream_bytes, task_ids, wait_until, write_all)


# ------------------------------------------------------------------ helpers

def tracer_of(pid, tid):
    try:
        with open(f'/proc/{pid}/task/{tid}/status') as f:
            for line in f:
                if line.startswith('TracerPid:'):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


# ----------------------------------------- (2) durability by strace, R5

STRACE_LINE = re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(.*)$')
SYSCALL = re.compile(r'^(\w+)\((.*)\)\s+=\s+(-?\w+|\?)(?:\s+(\w+)\s+\([^)]*\))?'
                     r'\s*(?:<(\d+\.\d+)>)?$')


class Call:
    def __init__(self, tid, start, name, args, ret, err, duration):
        self.tid, self.start, self.name, self.args, self.ret = tid, start, name, args, ret
        self.err = err
        self.end = start + duration

    def __repr__(self):
        return (f'{self.tid} {self.start:.6f} {self.name}({self.args}) = {self.ret}'
                + (f' {self.err}' if self.err else ''))


def parse_strace(path):
    """The completed system calls of an `strace -f -ttt -T -y` log, in the
    order they started; unfinished/resumed pairs are joined."""
    calls, pending = [], {}
    for line in read_file(path).decode(errors='replace').splitlines():
        m = STRACE_LINE.match(line)
        if not m:
            continue
        tid, ts, text = int(m.group(1)), float(m.group(2)), m.group(3)
        if text.endswith('<unfinished ...>'):
            pending[tid] = (ts, text[:-len('<unfinished ...>')].rstrip())
            continue
        r = re.match(r'^<\.\.\. (\w+) resumed>\s?(.*)$', text)
        if r:
            if tid not in pending:
                continue
            ts, head = pending.pop(tid)
            text = head + r.group(2)
        s = SYSCALL.match(text)
        if s:
            calls.append(Call(tid, ts, s.group(1), s.group(2), s.group(3), s.group(4),
                              float(s.group(5) or 0)))
    calls.sort(key=lambda c: c.start)
    return calls


class Strace:
    """strace attached to every thread of a running daemon."""

    def __init__(self, pid, out, syscalls):
        self.pid, self.out = pid, out
        self.err = open(out + '.err', 'wb')
        self.proc = subprocess.Popen(
            ['strace', '-f', '-ttt', '-T', '-y', '-s', '256', '-p', str(pid),
             '-e', f'trace={",".join(syscalls)}', '-o', out],
            stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err)
        try:
            wait_until(self._attached, what=f'strace to attach to every thread of {pid}')
        except BaseException:
            self.stop()
            raise

    def _attached(self):
        if self.proc.poll() is not None:
            raise AssertionError(f'strace exited with {self.proc.returncode}: '
                                 f'{read_file(self.out + ".err").decode(errors="replace")}')
        tids = task_ids(self.pid)
        return tids and all(tracer_of(self.pid, t) == self.proc.pid for t in tids)

    def stop(self):
        """Detach (SIGINT makes strace detach and flush its output)."""
        helpers.stop_process(self.proc, sig=signal.SIGINT)
        self.err.close()
        return parse_strace(self.out)


def _timed_drop(path, data):
    """Create-new, write, close; the wall-clock times around the close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if data:
        write_all(fd, data)
    before = time.time()
    os.close(fd)
    after = time.time()
    return before, after


def _fd_path(args, index=0):
    """The path strace -y printed for the INDEX-th descriptor argument."""
    paths = re.findall(r'\d+<([^>]*)>', args)
    return paths[index] if len(paths) > index else None


SYNC_CALLS = ('fsync', 'fdatasync', 'syncfs', 'sync_file_range')


def one_commit(m):
    """Does mount M make a durable close in one journal commit (its start
    says so: core/durable.h)?"""
    return 'durable close by one journal commit' in m.log()
TRACED = ['fsync', 'fdatasync', 'syncfs', 'sync_file_range', 'renameat2', 'renameat',
          'openat', 'close']


@pytest.mark.parametrize('sub', ['', 'sub'])
def test_close_returns_after_data_and_directories_are_synced(mount_inboxfs, client, tmp_path,
                                                             sub):
    """sync=close (the default): the drop's data is fsynced before it is
    renamed into its directory (the inbox, or a subdirectory), that
    directory is fsynced after the rename, and all of it happens before the
    client's close() returns. (The staging area is not: the rename's two
    ends are one step, and a d.* name a crash left is never delivered.)"""
    m = mount_inboxfs()
    if sub:
        os.mkdir(os.path.join(m.inbox, sub))
        os.chmod(os.path.join(m.inbox, sub), 0o1777)
    # The drop is staged in the instance's own area of the staging directory.
    staging = staging_area(os.path.join(os.path.realpath(m.inbox), STAGING), m.pid)
    inbox = os.path.join(os.path.realpath(m.inbox), sub) if sub else os.path.realpath(m.inbox)
    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        before, after = client.call(_timed_drop, os.path.join(m.mnt, sub, 'DURABLE.SVF'),
                                    message('durable', 100_000))
    finally:
        calls = trace.stop()
    assert message_id(read_file(os.path.join(m.inbox, sub, 'DURABLE.SVF'))) == 'durable'

    relevant = [c for c in calls if c.name in SYNC_CALLS + ('renameat2', 'renameat')]
    renames = [c for c in calls if c.name == 'renameat2' and '"DURABLE.SVF"' in c.args
               and 'RENAME_NOREPLACE' in c.args and c.ret == '0']
    assert len(renames) == 1, f'no single publishing renameat2 in {relevant}'
    rename = renames[0]
    stage_name = re.search(r'"(d\.[0-9a-f]+)"', rename.args).group(1)
    assert _fd_path(rename.args, 0) == staging, rename
    assert _fd_path(rename.args, 1) == inbox, rename

    # Where the tests' directory is journaled ext4, the data is written
    # out instead, and the directory's commit carries it (core/durable.h).
    data_calls = ('sync_file_range',) if one_commit(m) else ('fsync', 'fdatasync')
    data_syncs = [c for c in calls if c.name in data_calls and c.ret == '0'
                  and _fd_path(c.args) == os.path.join(staging, stage_name)]
    assert data_syncs, f'the drop {stage_name} was never fsynced: {relevant}'
    assert data_syncs[-1].end <= rename.start, \
        f'the drop was renamed before its fsync ended: {data_syncs[-1]} / {rename}'
    # What is renamed is what was written: nothing was written after the fsync.
    dir_syncs = {path: [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
                        and _fd_path(c.args) == path and c.start >= rename.end]
                 for path in (inbox,)}
    for path, found in dir_syncs.items():
        assert found, f'no successful fsync of {path} after the rename: {relevant}'
    # All of it before the client's close() returned.
    last = max([data_syncs[-1].end, rename.end] + [found[0].end for found in dir_syncs.values()])
    assert last <= after, f'the close returned at {after:.6f}, the last sync ended at {last:.6f}'
    print(f'\nclose: {before:.6f} .. {after:.6f}; fsync(drop) {data_syncs[-1].start:.6f}, '
          f'renameat2 {rename.start:.6f}, fsync(dirs) '
          f'{[round(f[0].start, 6) for f in dir_syncs.values()]}')


def test_empty_drop_is_published_before_close_returns(mount_inboxfs, client, tmp_path):
    """An empty drop is a message like any other: its writer's close
    returns once it is published and its directories synced."""
    m = mount_inboxfs()
    inbox = os.path.realpath(m.inbox)
    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        before, after = client.call(_timed_drop, os.path.join(m.mnt, 'EMPTY.SVF'), b'')
    finally:
        calls = trace.stop()
    relevant = [c for c in calls if c.name in SYNC_CALLS + ('renameat2', 'renameat')]
    renames = [c for c in calls if c.name == 'renameat2' and '"EMPTY.SVF"' in c.args
               and c.ret == '0']
    assert len(renames) == 1, f'no publishing rename in {relevant}'
    syncs = [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
             and _fd_path(c.args) == inbox and c.start >= renames[0].end]
    assert syncs and syncs[0].end <= after, f'close returned before the sync: {relevant}'
    assert read_file(os.path.join(m.inbox, 'EMPTY.SVF')) == b''


def test_lingering_acknowledgement_is_synced_before_close_returns(mount_inboxfs, client,
                                                                   tmp_path):
    """linger=: a closed drop is published later; its acknowledgement (d.X
    renamed a.X in staging, which recovery delivers) is durable before the
    close returns; and once published, the a.X name's removal is synced
    too (recovery would deliver it again)."""
    m = mount_inboxfs(linger=2)
    staging = staging_area(os.path.join(os.path.realpath(m.inbox), STAGING), m.pid)
    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        before, after = client.call(_timed_drop, os.path.join(m.mnt, 'LATER.SVF'), b'later')
        # The counter moves once the publication's syncs are done; the
        # file shows before them.
        wait_until(lambda: read_stats(m.mnt)['publications'] == 1, timeout=TIMEOUT,
                   what='the lingering drop to be published and synced')
    finally:
        calls = trace.stop()
    acks = [c for c in calls if c.name in ('renameat', 'renameat2') and c.ret == '0'
            and re.search(r'"d\.[0-9a-f]+".*"a\.[0-9a-f]+"', c.args)]
    relevant = [c for c in calls if c.name in SYNC_CALLS + ('renameat2', 'renameat')]
    assert len(acks) == 1, f'no acknowledgement rename in {relevant}'
    syncs = [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
             and _fd_path(c.args) == staging and c.start >= acks[0].end]
    assert syncs, f'staging not fsynced after the acknowledgement: {relevant}'
    assert syncs[0].end <= after, 'close returned before the acknowledgement was durable'
    published = [c for c in calls if c.name == 'renameat2' and c.ret == '0'
                 and re.search(r'"a\.[0-9a-f]+".*"LATER\.SVF"', c.args)]
    assert len(published) == 1, f'no publication of the a.* name in {relevant}'
    # On the one-commit path the inbox's commit covers the staging area's
    # end of the rename too.
    for path in (os.path.realpath(m.inbox),) + (() if one_commit(m) else (staging,)):
        assert [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
                and _fd_path(c.args) == path and c.start >= published[0].end], \
            f'{path} not fsynced after the publication: {relevant}'
    assert read_file(os.path.join(m.inbox, 'LATER.SVF')) == b'later'


def _journal_commits(device):
    """Commits of ext4's journal on DEVICE so far (jbd2's info file)."""
    with open(f'/proc/fs/jbd2/{device}-8/info') as f:
        return int(f.read().split()[0])


def _one_drop_each(mnt, names):
    for name in names:
        _timed_drop(os.path.join(mnt, name), message(name, 20_000))


DROPS = 12


@pytest.mark.parametrize('fstype, datasync', [('ext4', 'auto'), ('ext4', 'fsync'),
                                               ('xfs', 'auto')])
def test_durable_close_on_journaled_ext4_is_one_commit(loop_fs, mount_inboxfs, client, tmp_path,
                                                       fstype, datasync):
    """On journaled ext4 (data=ordered) and XFS sync=close makes a drop
    durable in one journal commit (core/durable.h): the drop's data
    written out and waited for (sync_file_range), then the rename, then the
    directory's fsync, which commits both, before the close returns; no
    fsync of the drop itself. datasync=fsync keeps two commits a drop.
    Counted on ext4's journal, which commits only when asked (commit=600)."""
    if fstype == 'xfs':
        fs = loop_fs(320, fstype='xfs')
    else:
        fs = loop_fs(64, options=('commit=600', 'noinit_itable'))
    m = fs.uses(mount_inboxfs(fs.inbox, datasync=datasync))
    why = '(journaled ext4, data=ordered)' if fstype == 'ext4' else '(XFS)'
    expected = (f'one journal commit (data written out, then the directory\'s fsync) {why}'
                if datasync == 'auto' else
                'fsync of the drop, then of its directory (datasync=fsync)')
    assert f'durable close by {expected}' in m.log(), m.log()
    inbox = os.path.realpath(fs.inbox)
    staging = staging_area(os.path.join(inbox, STAGING), m.pid)
    if fstype == 'ext4':
        subprocess.run(['sync', '-f', fs.root], check=True, timeout=TIMEOUT * 3)
        before = _journal_commits(fs.device())
        client.call(_one_drop_each, m.mnt, [f'C{i:02d}.SVF' for i in range(DROPS)])
        commits = _journal_commits(fs.device()) - before
        print(f'\ndatasync={datasync}: {commits} journal commits for {DROPS} drops')
        if datasync == 'fsync':
            assert commits >= 2 * DROPS, commits
            return
        # One a drop; a few more may come from the daemon's own writes (atime).
        assert DROPS <= commits < 1.5 * DROPS, commits

    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        _, after = client.call(_timed_drop, os.path.join(m.mnt, 'ONE.SVF'),
                               message('one', 100_000))
    finally:
        calls = trace.stop()
    relevant = [c for c in calls if c.name in SYNC_CALLS + ('renameat2', 'renameat')]
    renames = [c for c in calls if c.name == 'renameat2' and '"ONE.SVF"' in c.args
               and c.ret == '0']
    assert len(renames) == 1, f'no single publishing renameat2 in {relevant}'
    rename = renames[0]
    staged_file = os.path.join(staging, re.search(r'"(d\.[0-9a-f]+)"', rename.args).group(1))
    written = [c for c in calls if c.name == 'sync_file_range' and c.ret == '0'
               and _fd_path(c.args) == staged_file]
    assert written and 'SYNC_FILE_RANGE_WAIT_AFTER' in written[-1].args, relevant
    assert written[-1].end <= rename.start, f'renamed before its data was written: {relevant}'
    assert not [c for c in calls if c.name in ('fsync', 'fdatasync')
                and _fd_path(c.args) == staged_file], f'the drop was fsynced: {relevant}'
    dir_syncs = [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
                 and _fd_path(c.args) == inbox and c.start >= rename.end]
    assert dir_syncs and dir_syncs[0].end <= after, f'close returned before the commit: {relevant}'
    assert message_id(read_file(os.path.join(fs.inbox, 'ONE.SVF'))) == 'one'


def test_sync_none_issues_no_fsync(mount_inboxfs, client, tmp_path):
    m = mount_inboxfs(sync='none')
    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        client.call(_timed_drop, os.path.join(m.mnt, 'FAST.SVF'), message('fast', 100_000))
        client.call(_timed_drop, os.path.join(m.mnt, 'FAST.SVF'), message('fast2', 10))
        client.call(_timed_drop, os.path.join(m.mnt, 'EMPTY.SVF'), b'')
        wait_until(lambda: os.path.exists(os.path.join(m.inbox, 'EMPTY.SVF')),
                   what='the empty drop to be published')
    finally:
        calls = trace.stop()
    # The trace saw the publications, and no sync of any kind.
    assert [c for c in calls if c.name == 'renameat2' and '"FAST.SVF"' in c.args]
    syncs = [c for c in calls if c.name in SYNC_CALLS]
    assert not syncs, f'sync=none issued {syncs}'
    assert sorted(message_id(d) for n, d in inbox_files(m).items() if n != 'EMPTY.SVF') == \
        ['fast', 'fast2']


# -------------------------------------------------- (3) dead writers, R6

@pytest.mark.parametrize('mode', ['park', 'stream'])
def test_writer_killed_mid_write_delivers_nothing(mounted, client, mode):
    """R6: a writer SIGKILLed with two drops open (parked after 192 KiB, or
    in the middle of a stream of writes): the kernel's close of a dead
    writer's files is no acknowledgement. Nothing reaches the inbox, nothing
    stays staged; both drops sit in incomplete/ with exactly the bytes
    written so far, and the log says so."""
    names = ['KILLED1.SVF', 'KILLED2.SVF']

    def both_staged():
        assert len(staged(mounted.inbox, acked=True)) == 2

    written = kill_writer(client, [os.path.join(mounted.mnt, n) for n in names],
                          chunks=3 if mode == 'park' else 40, stream=mode == 'stream',
                          before_kill=both_staged)

    found = wait_until(lambda: len(incomplete(mounted.inbox)) == 2 and incomplete(mounted.inbox),
                       what='both partial drops in incomplete/')
    assert inbox_files(mounted) == {} and mounted.backing_files() == []
    assert staged(mounted.inbox, acked=True) == []
    for name, data in found.items():
        assert len(data) >= written, (name, len(data), written)
        assert data == stream_bytes(len(data)), f'{name}: not the bytes written'
        if mode == 'park':
            assert len(data) == written
    files, lines = assert_quarantine_accounted(mounted)
    assert sorted(lines[n][0] for n in files) == names
    time.sleep(0.3)                                       # nothing shows up late either
    assert inbox_files(mounted) == {} and mounted.backing_files() == []
    # The daemon serves on.
    client.call(_timed_drop, os.path.join(mounted.mnt, 'KILLED1.SVF'), message('after', 10))
    assert message_id(read_file(os.path.join(mounted.inbox, 'KILLED1.SVF'))) == 'after'


def _smb_holder(port, name, part, ready_w):
    """In a forked child: an SMB connection that creates NAME (FILE_CREATE),
    writes PART, reports, and then waits to be killed."""
    from impacket import smb3structs as s3
    conn = helpers.SmbClient(port, helpers.SMB_USER, helpers.SMB_PASSWORD)
    status, fid = conn.create(name, s3.FILE_CREATE, data=part, close=False)
    os.write(ready_w, b'%d\n' % status)
    while True:
        time.sleep(60)


def smb_holders(server, name):
    """The smbd processes holding NAME open (readlink of /proc/PID/fd never
    touches the mount)."""
    return {pid for pid in helpers.process_group(server.proc.pid)
            if any(t.endswith('/' + name) for t in helpers.open_files(pid))}


def _tear_down(server, name, part, how):
    """Open NAME over SMB, write PART, and drop the connection without
    closing the file: the client process is SIGKILLed (the kernel closes
    its socket), or its socket is reset (SO_LINGER 0)."""
    if how == 'kill':
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                _smb_holder(server.port, name, part, ready_w)
            finally:
                os._exit(1)
        os.close(ready_w)
        try:
            assert select.select([ready_r], [], [], TIMEOUT * 3)[0], 'SMB client did not start'
            status = int(os.read(ready_r, 64) or b'-1')
            assert status == helpers.STATUS_SUCCESS, helpers.nt_status_name(status)
            yield
            os.kill(pid, signal.SIGKILL)
        finally:
            os.close(ready_r)
            reap_all([pid])
    else:
        from impacket import smb3structs as s3
        conn = helpers.SmbClient(server.port, helpers.SMB_USER, helpers.SMB_PASSWORD)
        status, fid = conn.create(name, s3.FILE_CREATE, data=part, close=False)
        assert status == helpers.STATUS_SUCCESS, helpers.nt_status_name(status)
        yield
        sock = conn.conn.getSMBServer()._NetBIOSSession.get_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()                                       # RST, no SMB CLOSE, no LOGOFF
        conn.conn = None


@pytest.mark.parametrize('how', ['kill', 'reset'])
def test_smb_connection_torn_down_mid_write_delivers_nothing(mounted, samba, how):
    """Through real Samba: FILE_CREATE, write part of the data, then the
    TCP connection dies without an SMB CLOSE. smbd's connection process
    exits; nothing may be delivered; the partial data goes to incomplete/."""
    server = samba(mounted.mnt)
    part = stream_bytes(300_000)
    steps = _tear_down(server, 'SMBDEAD.SVF', part, how)
    next(steps)                                             # open, part written
    conn_pids = smb_holders(server, 'SMBDEAD.SVF')
    assert len(conn_pids) == 1, f'smbd processes holding the file: {conn_pids}'
    assert len(staged(mounted.inbox, acked=True)) == 1
    assert inbox_files(mounted) == {}
    conn_pid = conn_pids.pop()
    # What smbd does with the open file when its client vanishes.
    trace = Strace(conn_pid, os.path.join(server.base, 'smbd-strace.log'),
                   ['close', 'exit_group', 'fsync', 'fdatasync', 'ftruncate'])
    try:
        try:
            next(steps)
        except StopIteration:
            pass
        wait_until(lambda: conn_pid not in helpers.process_group(server.proc.pid),
                   timeout=TIMEOUT * 3, what="smbd's connection process to exit")
    finally:
        calls = trace.stop()
    wait_until(lambda: staged(mounted.inbox, acked=True) == [], what='the drop to leave staging')
    delivered = {n: len(d) for n, d in inbox_files(mounted).items()}
    closes = [c for c in calls if c.name == 'close' and 'SMBDEAD.SVF' in c.args]
    exits = [c for c in calls if c.name == 'exit_group']
    how_closed = ('smbd closed the file itself, with close(2), before exit_group: '
                  f'{closes} then {exits[:1]}' if closes and exits and
                  closes[0].start < exits[0].start else
                  f'smbd did not close the file itself (closes {closes}, exit {exits[:1]})')
    assert delivered == {}, (
        f'a torn-down SMB connection delivered {delivered} ({len(part)} bytes written, '
        f'no SMB CLOSE): {how_closed}; the daemon took that close for an acknowledgement')
    found = incomplete(mounted.inbox)
    assert list(found.values()) == [part]
    assert_quarantine_accounted(mounted)


# An fsync() that fails with EIO on directories while FLAG exists: the disk
# failing the publication's directory sync.
FAIL_DIR_SYNC = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync(int fd)
{
	static int (*real)(int);
	const char *flag = getenv("INBOXFS_FAIL_DIRSYNC");
	struct stat st;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (flag && access(flag, F_OK) == 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
'''


def test_publication_whose_directory_sync_fails_is_undone(mount_inboxfs, client, tmp_path,
                                                          monkeypatch):
    """R5/R6: when the disk fails the directory sync after a drop was moved
    into the inbox, the publication is undone and the writer's close fails:
    the message is not delivered (it is quarantined), nothing is swallowed.
    A failing fsync() is interposed with LD_PRELOAD."""
    src, lib, flag = tmp_path / 'faildirsync.c', tmp_path / 'faildirsync.so', tmp_path / 'fail'
    src.write_text(FAIL_DIR_SYNC)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', f'INBOXFS_FAIL_DIRSYNC={flag}',
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)
    m = mount_inboxfs()
    m.allow_log(r'fsync of the directory|Input/output error|quarantine')
    path = os.path.join(m.mnt, 'D.SVF')
    client.call(helpers.create_excl, path, b'first, delivered')
    flag.write_text('')
    err = helpers.errno_of(client.call, helpers.create_excl, path, b'second, not delivered')
    flag.unlink()
    client.call(helpers.create_excl, path, b'third, delivered')
    assert err == errno.EIO
    delivered = sorted(inbox_files(m).values())
    assert delivered == [b'first, delivered', b'third, delivered'], delivered
    wait_until(lambda: list(incomplete(m.inbox).values()) == [b'second, not delivered'],
               what='the undone drop quarantined')


# The drop's data sync fails with EIO while FLAG exists: fsync() of a
# regular file, and sync_file_range() (the one-commit path).
FAIL_DATA_SYNC = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int failing(void)
{
	const char *flag = getenv("INBOXFS_FAIL_DATASYNC");

	return flag && access(flag, F_OK) == 0;
}

int fsync(int fd)
{
	static int (*real)(int);
	struct stat st;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (failing() && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags)
{
	static int (*real)(int, off_t, off_t, unsigned int);

	if (!real)
		real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
	if (failing()) {
		errno = EIO;
		return -1;
	}
	return real(fd, offset, nbytes, flags);
}
'''


@pytest.mark.parametrize('datasync', ['auto', 'fsync'])
@pytest.mark.parametrize('linger', [0, 2])
def test_close_whose_data_sync_fails_is_not_delivered(loop_fs, mount_inboxfs, client, tmp_path,
                                                      monkeypatch, datasync, linger):
    """R5/R6 on both durable paths (journaled ext4: one commit; datasync=
    fsync: two syncs), publishing at the close or acknowledging it as a.*
    (linger=): when the disk fails the drop's data sync, the close fails
    with EIO, nothing is renamed, and the drop is quarantined, never
    delivered."""
    src, lib, flag = tmp_path / 'faildatasync.c', tmp_path / 'faildatasync.so', tmp_path / 'fail'
    src.write_text(FAIL_DATA_SYNC)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', f'INBOXFS_FAIL_DATASYNC={flag}',
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)
    fs = loop_fs(64)
    m = fs.uses(mount_inboxfs(fs.inbox, datasync=datasync, linger=linger))
    assert ('one journal commit' if datasync == 'auto' else 'datasync=fsync') in m.log()
    m.allow_log(r'Input/output error|quarantine|publishing|acknowledging')
    flag.write_text('')
    err = helpers.errno_of(client.call, helpers.create_excl, os.path.join(m.mnt, 'LOST.SVF'),
                           b'not delivered')
    flag.unlink()
    client.call(helpers.create_excl, os.path.join(m.mnt, 'KEPT.SVF'), b'delivered')
    assert err == errno.EIO
    wait_until(lambda: inbox_files(m) == {'KEPT.SVF': b'delivered'}, timeout=TIMEOUT,
               what='the second drop delivered, the first not')
    wait_until(lambda: list(incomplete(fs.inbox).values()) == [b'not delivered'],
               what='the failed drop quarantined')


# An fsync() of one directory (the inode number in FLAG, while FLAG exists)
# that takes 200 ms and fails with EIO; each call is counted (a byte
# appended to COUNT).
SLOW_FAILING_DIR_SYNC = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fsync(int fd)
{
	static int (*real)(int);
	const char *flag = getenv("INBOXFS_FAIL_DIRSYNC");
	const char *count = getenv("INBOXFS_DIRSYNC_COUNT");
	struct timespec pause = { 0, 200 * 1000 * 1000 };
	unsigned long long ino = 0;
	struct stat st;
	FILE *f;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (flag == NULL || count == NULL || (f = fopen(flag, "r")) == NULL)
		return real(fd);
	if (fscanf(f, "%llu", &ino) != 1)
		ino = 0;
	fclose(f);
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_ino != ino)
		return real(fd);
	int c = open(count, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (c >= 0) {
		(void)write(c, ".", 1);
		close(c);
	}
	nanosleep(&pause, NULL);
	errno = EIO;
	return -1;
}
'''


def test_concurrent_publications_share_a_failing_directory_sync(mount_inboxfs, tmp_path,
                                                                 monkeypatch):
    """Concurrent durable closes share their directory's sync (a group
    commit), and when the disk fails it, every publication it covered is
    undone and every one of those closes fails: none is delivered, all are
    quarantined. The directory's fsync() is interposed (LD_PRELOAD): slow,
    so that closes queue behind it, and failing."""
    src, lib = tmp_path / 'slowdirsync.c', tmp_path / 'slowdirsync.so'
    flag, count = tmp_path / 'fail', tmp_path / 'count'
    src.write_text(SLOW_FAILING_DIR_SYNC)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', f'INBOXFS_FAIL_DIRSYNC={flag}',
        f'INBOXFS_DIRSYNC_COUNT={count}',
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)
    m = mount_inboxfs()
    m.allow_log(r'fsync of the directory|Input/output error|quarantine')
    writers = 8
    flag.write_text(str(os.stat(m.inbox).st_ino))
    results = helpers.run_together(
        [(helpers.CLIENT_UID, helpers.errno_of,
          (helpers.create_excl, os.path.join(m.mnt, f'G{i}.SVF'), b'not delivered %d' % i))
         for i in range(writers)])
    flag.unlink()
    syncs = len(count.read_bytes())
    assert results == [errno.EIO] * writers, results
    assert inbox_files(m) == {}
    print(f'\n{syncs} directory syncs for {writers} concurrent closes')
    assert 1 <= syncs < writers, f'{syncs} directory syncs for {writers} concurrent closes'
    wait_until(lambda: len(incomplete(m.inbox)) == writers, what='the undone drops quarantined')
    assert sorted(incomplete(m.inbox).values()) == \
        sorted(b'not delivered %d' % i for i in range(writers))
    # The disk is back: the next drop is delivered.
    client = helpers.Client()
    client.call(helpers.create_excl, os.path.join(m.mnt, 'G0.SVF'), b'delivered')
    assert inbox_files(m) == {'G0.SVF': b'delivered'}


# ------------------------------- (4) a close whose answer cannot reach, R6

# Creates argv[1], writes argv[2], says 'closing' and closes; prints
# 'closed ERRNO' (0: it succeeded). With argv[3], a handler for SIGUSR1.
CLOSING_WRITER = r'''
import os, signal, sys
path, data = sys.argv[1], sys.argv[2].encode()
if len(sys.argv) > 3:
    signal.signal(signal.SIGUSR1, lambda *a: None)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, data)
sys.stdout.write('closing\n'); sys.stdout.flush()
try:
    os.close(fd)
    err = 0
except OSError as e:
    err = e.errno
sys.stdout.write('closed %d\n' % err); sys.stdout.flush()
'''

CLOSE_NR = {'x86_64': 3, 'aarch64': 57}.get(platform.machine())
LATE_FSYNC_MS = 2000


def in_close(pid):
    """Is process PID blocked in close(2)? (/proc/PID/syscall: root may read
    it; never touches the mount.)"""
    try:
        with open(f'/proc/{pid}/syscall') as f:
            return f.read().split()[0] == str(CLOSE_NR)
    except (OSError, IndexError):
        return False


def slow_fsync_mount(mount_inboxfs, tmp_path, monkeypatch, transport, **options):
    """A mount whose fsyncs of regular files take LATE_FSYNC_MS
    (test_transport's LD_PRELOAD), over io_uring (the fuse module's
    enable_uring set for the mount only: the kernel reads it at INIT) or
    /dev/fuse."""
    from test_transport import mount_over, slow_fsync_preload
    if CLOSE_NR is None:
        pytest.skip(f'close(2)\'s number on {platform.machine()} not known here')
    slow_fsync_preload(tmp_path, monkeypatch, LATE_FSYNC_MS)
    return mount_over(mount_inboxfs, transport, sync='close', **options)


@pytest.mark.parametrize('transport,sig,linger', [
    ('dev', 'KILL', 0), ('uring', 'KILL', 0), ('dev', 'KILL', 1),
    ('dev', 'USR1', 0), ('uring', 'USR1', 0),
    ('dev', None, 0), ('uring', None, 0), ('dev', None, 1)])
def test_close_whose_writer_is_signalled_during_its_fsync(mount_inboxfs, client, tmp_path,
                                                          monkeypatch, transport, sig, linger):
    """A writer's close held in the drop's fsync (LATE_FSYNC_MS) and the
    writer signalled meanwhile by another process. SIGKILL: the kernel's
    FLUSH is forced, the killed writer waits for the answer and dies
    without seeing it, so nothing is delivered: the drop goes to
    incomplete/ with a log line. With linger=1 the acknowledgement (a.*)
    is the commit point: nothing is delivered after the linger either.
    SIGUSR1 to a handler: the kernel sends an INTERRUPT, but the close
    still waits for the answer and returns it, so it succeeds and the drop
    is delivered once (a caught signal, such as smbd's SIGHUP to reload
    its configuration, must fail no close). The control (no signal):
    delivered once, the close succeeds after the fsync."""
    m = slow_fsync_mount(mount_inboxfs, tmp_path, monkeypatch, transport,
                         **({'linger': linger} if linger else {}))
    m.allow_log(r'quarantine|never saw a successful close|Input/output error')
    name = f'LATE{sig}.SVF'
    data = f'{sig} {transport} {linger}'
    proc = client.popen([sys.executable, '-c', CLOSING_WRITER, os.path.join(m.mnt, name), data]
                        + (['handler'] if sig == 'USR1' else []),
                        stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], TIMEOUT * 3)[0], 'the writer did not write'
        assert proc.stdout.readline() == 'closing\n'
        start = time.monotonic()
        wait_until(lambda: in_close(proc.pid), what='the writer in close(2)')
        if sig:
            # Well inside the fsync: the close cannot have been answered.
            assert time.monotonic() - start < LATE_FSYNC_MS / 1000 / 2
            os.kill(proc.pid, getattr(signal, 'SIG' + sig))
        out = proc.communicate(timeout=TIMEOUT * 6)[0]
    finally:
        helpers.stop_process(proc, sig=signal.SIGKILL)
        proc.stdout.close()
    if linger:
        time.sleep(linger + 0.5)                       # publication would be due by now
    if sig != 'KILL':
        assert proc.returncode == 0 and out == 'closed 0\n', (proc.returncode, out)
        assert time.monotonic() - start >= LATE_FSYNC_MS / 1000 * 0.9
        wait_until(lambda: inbox_files(m), what='the drop delivered')
        assert inbox_files(m) == {name: data.encode()}
        assert incomplete(m.inbox) == {}
        return
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out)
    wait_until(lambda: incomplete(m.inbox) or inbox_files(m), what='the drop delivered or aside')
    assert inbox_files(m) == {}, 'delivered, though its close never answered its writer'
    assert list(incomplete(m.inbox).values()) == [data.encode()]
    assert_quarantine_accounted(m)
    assert re.search(r'killed.*while its close waited.*not delivered', m.log()), m.log()
    assert staged(m.inbox, acked=True) == []
    time.sleep(0.3)                                    # nothing shows up late either
    assert inbox_files(m) == {}


@pytest.mark.parametrize('how', ['reset', 'wait'])
def test_smb_close_whose_connection_is_lost_during_its_fsync(mount_inboxfs, samba, tmp_path,
                                                             monkeypatch, how):
    """Through real Samba, a drop's fsync held (LATE_FSYNC_MS): the client
    sends CLOSE without waiting for its answer and resets the connection
    (SO_LINGER 0) while smbd's close waits for the fsync: the client never
    sees the CLOSE's answer and would send the message again, so nothing
    may be delivered; the data goes to incomplete/. The control ('wait'):
    a client that waits for the answer gets STATUS_SUCCESS, delivered once."""
    from impacket import smb3structs as s3
    m = slow_fsync_mount(mount_inboxfs, tmp_path, monkeypatch, 'dev')
    m.allow_log(r'quarantine|never saw a successful close|Input/output error')
    server = samba(m.mnt)
    name, part = 'SMBLATE.SVF', stream_bytes(100_000)
    conn = helpers.SmbClient(server.port, helpers.SMB_USER, helpers.SMB_PASSWORD)
    try:
        status, fid = conn.create(name, s3.FILE_CREATE, data=part, close=False)
        assert status == helpers.STATUS_SUCCESS, helpers.nt_status_name(status)
        conn_pids = smb_holders(server, name)
        assert len(conn_pids) == 1, f'smbd processes holding the file: {conn_pids}'
        conn_pid = conn_pids.pop()
        if how == 'wait':
            start = time.monotonic()
            conn.close(fid)                                # raises unless STATUS_SUCCESS
            assert time.monotonic() - start >= LATE_FSYNC_MS / 1000 * 0.9
            assert inbox_files(m) == {name: part}
            return
        smb = conn.conn.getSMBServer()
        packet = smb.SMB_PACKET()
        packet['Command'] = s3.SMB2_CLOSE
        packet['TreeID'] = conn.tid
        close = s3.SMB2Close()
        close['Flags'] = 0
        close['FileID'] = fid
        packet['Data'] = close
        smb.sendSMB(packet)                                # no wait for the answer
        start = time.monotonic()
        wait_until(lambda: in_close(conn_pid), what="smbd's close(2) of the drop")
        assert time.monotonic() - start < LATE_FSYNC_MS / 1000 / 2
        sock = smb._NetBIOSSession.get_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()                                       # RST
        conn.conn = None
    finally:
        conn.disconnect()
    wait_until(lambda: conn_pid not in helpers.process_group(server.proc.pid),
               timeout=TIMEOUT * 3, what="smbd's connection process to exit")
    wait_until(lambda: incomplete(m.inbox) or inbox_files(m), what='the drop delivered or aside')
    assert inbox_files(m) == {}, 'delivered, though its CLOSE never answered its client'
    assert list(incomplete(m.inbox).values()) == [part]
    assert_quarantine_accounted(m)
    assert re.search(r'connection.*lost while its close waited.*not delivered', m.log()), m.log()
