"""Faults (issue 4; DESIGN R4, R5, R6, R11): nothing acknowledged is lost
and nothing partial is delivered when the daemon is killed, when writers
die mid-copy (locally or with their SMB connection), when the disk fills.
Everything is checked in the BACKING inbox, by content: every message
carries its id, its length and the sha256 of its body.

Hostile input (R8, R9, R11, R12) is in test_hostile.py."""

import collections
import errno
import hashlib
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import helpers
from helpers import (CLIENT_UID, TIMEOUT, drop_privileges, incomplete, staged, staging_area,
                     wait_until)

STAGING = '.inboxfs'
# core/staging.c quarantine_drop(): the name is escaped by log_name(), so it
# holds no raw double quote.
QUARANTINE_LINE = re.compile(
    r'quarantined "([^"]*)" as incomplete/([ad]\.[0-9a-f]+) \((-?\d+) bytes\): (.*)$')


# ------------------------------------------------------------------ helpers

def message(ident, size, rng=random):
    """A message that proves itself: MSG ID LENGTH SHA256\\n BODY."""
    body = rng.randbytes(size)
    head = f'MSG {ident} {size} {hashlib.sha256(body).hexdigest()}\n'.encode()
    return head + body


def message_id(data):
    """The id of an intact message, None for anything partial or corrupt."""
    head, sep, body = data.partition(b'\n')
    parts = head.split(b' ')
    if not sep or len(parts) != 4 or parts[0] != b'MSG':
        return None
    try:
        ident, size, digest = parts[1].decode(), int(parts[2]), parts[3].decode()
    except (UnicodeDecodeError, ValueError):
        return None
    if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
        return None
    return ident


def claimed_id(data):
    """The id a (possibly partial) message's header names, or None."""
    parts = data.partition(b'\n')[0].split(b' ')
    if len(parts) >= 2 and parts[0] == b'MSG':
        return parts[1].decode(errors='replace')
    return None


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def inbox_files(mount):
    """{relative path: bytes} of every regular file of the backing inbox,
    subdirectories included, staging excluded."""
    found = {}
    for top, dirs, files in os.walk(mount.inbox):
        if top == mount.inbox and STAGING in dirs:
            dirs.remove(STAGING)
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found[os.path.relpath(path, mount.inbox)] = read_file(path)
    return found


def quarantine_lines(mount):
    """{stage name: (requested name, bytes, why)} from the logs of every run
    of the daemon over this inbox."""
    found = {}
    for run in mount.runs:
        for line in run.log().splitlines():
            m = QUARANTINE_LINE.search(line)
            if m:
                found[m.group(2)] = (m.group(1), int(m.group(3)), m.group(4))
    return found


def assert_quarantine_accounted(mount):
    """Every file in incomplete/ has its log line, with its size."""
    files = incomplete(mount.inbox)
    try:   # the file is moved first, then the line is written
        wait_until(lambda: set(files) <= set(quarantine_lines(mount)), timeout=2)
    except TimeoutError:
        pass
    lines = quarantine_lines(mount)
    unlogged = sorted(set(files) - set(lines))
    assert not unlogged, f'{len(unlogged)} quarantined files without a log line: {unlogged[:10]}'
    wrong = {n: (len(d), lines[n][1]) for n, d in files.items() if lines[n][1] != len(d)}
    assert not wrong, f'quarantine log lines with the wrong size (file, logged): {wrong}'
    return files, lines


def write_all(fd, data, chunk=65536):
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:chunk])
        view = view[n:]


def task_ids(pid):
    try:
        return [int(t) for t in os.listdir(f'/proc/{pid}/task')]
    except FileNotFoundError:
        return []


def tracer_of(pid, tid):
    try:
        with open(f'/proc/{pid}/task/{tid}/status') as f:
            for line in f:
                if line.startswith('TracerPid:'):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def fuse_connection(mnt):
    """The FUSE connection number (the device minor) of the top mount at mnt."""
    path = mnt             # no realpath(): a stat of a wedged mount never returns
    found = None
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            if fields[4] == path and ' - fuse.inboxfs ' in line:
                found = int(fields[2].split(':')[1])
    return found


def abort_fuse(mnt):
    """Abort the FUSE connection of the mount at mnt (fusectl), as the
    kernel does when the daemon's last /dev/fuse descriptor closes: every
    request waiting on it fails with ENOTCONN. Returns what was done."""
    conn = fuse_connection(mnt)
    if conn is None:
        return 'no fuse.inboxfs mount there'
    ctl = tempfile.mkdtemp(prefix='fusectl-')
    try:
        subprocess.run(['mount', '-t', 'fusectl', 'none', ctl], check=True,
                       capture_output=True, timeout=TIMEOUT)
        try:
            with open(os.path.join(ctl, str(conn), 'abort'), 'w') as f:
                f.write('1')
        finally:
            subprocess.run(['umount', ctl], capture_output=True, timeout=TIMEOUT)
        return f'aborted FUSE connection {conn}'
    except (OSError, subprocess.SubprocessError) as e:
        return f'could not abort FUSE connection {conn}: {e}'
    finally:
        os.rmdir(ctl)


def kernel_stacks(pid):
    """{tid: 'state: stack'} of every thread of pid, for diagnostics."""
    out = {}
    for tid in task_ids(pid):
        try:
            with open(f'/proc/{pid}/task/{tid}/status') as f:
                state = next(line.split(None, 1)[1].strip() for line in f
                             if line.startswith('State:'))
            with open(f'/proc/{pid}/task/{tid}/stack') as f:
                stack = ' < '.join(line.split()[-1].split('+')[0] for line in f)
        except (OSError, StopIteration):
            continue
        out[tid] = f'{state}: {stack}'
    return out


def reap_all(pids, timeout=TIMEOUT, mnt=None):
    """Wait for our forked children; SIGKILL (by pid) those that linger.
    Children stuck in the kernel on a wedged FUSE mount are freed by
    aborting its connection. Returns ({pid: wait status}, problems)."""
    status, problems = {}, []
    left = set(pids)

    def collect(until):
        while left:
            for pid in list(left):
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status[pid] = st
                    left.discard(pid)
            if not left or time.monotonic() > until:
                return
            time.sleep(0.02)

    collect(time.monotonic() + timeout)
    if left:
        problems.append(f'children {sorted(left)} did not finish within {timeout:.0f}s: '
                        f'{ {p: kernel_stacks(p) for p in left} }')
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        collect(time.monotonic() + TIMEOUT)
    if left and mnt is not None:
        problems.append(abort_fuse(mnt))
        collect(time.monotonic() + TIMEOUT)
    for pid in left:                       # nothing more we can do: never hang
        problems.append(f'child {pid} is unkillable: {kernel_stacks(pid)}')
    return status, problems


def crash(mount, timeout=5):
    """Mount.crash() with a diagnosis: SIGKILL the daemon. If it does not
    die (a thread stuck in the kernel keeps its /dev/fuse descriptor open,
    so the kernel never aborts the connection and every client waiting on
    the mount hangs for good), abort the connection by hand so that the
    test can go on, and return what was seen; else None."""
    run = mount.run
    run.expected_status = -signal.SIGKILL
    run.proc.send_signal(signal.SIGKILL)
    try:
        run.proc.wait(timeout=timeout)
        return None
    except subprocess.TimeoutExpired:
        pass
    stacks = kernel_stacks(run.proc.pid)
    done = abort_fuse(mount.mnt)
    try:
        run.proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f'the SIGKILLed daemon (pid {run.proc.pid}) cannot die: '
                             f'{stacks}; {done}')
    return (f'the SIGKILLed daemon (pid {run.proc.pid}) did not die within {timeout}s: '
            f'a thread stuck in the kernel held the FUSE device open, so the connection '
            f'was never aborted and the mount and its clients hung until the test aborted '
            f'it by hand (threads: {stacks})')


def restart(mount, timeout=TIMEOUT * 3):
    """Start the daemon again over the stale mount a crash left; returns
    how long it took to be served. (Not Mount.start(): it waits for a
    mount id it has not seen before, and the kernel hands the detached
    stale mount's id to the new mount often enough.) A start that hangs
    is diagnosed."""
    start = time.monotonic()
    mount.start(wait=False)
    run = mount.run
    parent_dev = os.stat(os.path.dirname(mount.mnt)).st_dev

    def served():
        if run.proc.poll() is not None:
            run.reported = True
            raise AssertionError(f'inboxfs exited with {run.proc.returncode} at restart\n'
                                 f'{run.log()}')
        if not any(m[1] == 'fuse.inboxfs' for m in helpers.mountinfo(mount.mnt)):
            return False
        try:
            return os.stat(mount.mnt).st_dev != parent_dev     # not the stale one: ENOTCONN
        except OSError:
            return False

    try:
        wait_until(served, timeout, what=f'the restarted daemon to serve {mount.mnt}')
    except TimeoutError as e:
        e.add_note(f'the new daemon (pid {run.proc.pid}) is at: {kernel_stacks(run.proc.pid)}'
                   f'\n{run.log()}')
        raise
    return time.monotonic() - start


# ------------------------------------------- (1) crash storm, R4 R5 R6

STORM_NAMES = [f'{c}{n:04d}' for c in 'KQZ' for n in range(7)]   # clock-seeded clients collide


def _storm_writer(mnt, index, ack_fd, stat_fd, stop_fd, deadline, seed):
    """One legacy client: create-new, write, close, forever; an id counts
    as acknowledged only when every call, close() included, returned
    without error. Runs in a forked child as a client uid."""
    rng = random.Random(seed)
    errors = collections.Counter()
    seq = 0
    while time.monotonic() < deadline and not select.select([stop_fd], [], [], 0)[0]:
        seq += 1
        ident = f'w{index:02d}-{seq:06d}'
        size = rng.choice((rng.randrange(1, 4096), rng.randrange(4096, 65536),
                           rng.randrange(65536, 262144)))
        sub = 'sub' if rng.random() < 0.25 else ''
        if rng.random() < 0.1:
            # An empty message says who it is by its (unique) name: its
            # acknowledgement is the a.* rename, its publication the RELEASE.
            data, name = b'', f'E{ident}.SVF'
        else:
            data, name = message(ident, size, rng), rng.choice(STORM_NAMES) + '.SVF'
        path = os.path.join(mnt, sub, name)
        fd = None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if data:
                write_all(fd, data, chunk=rng.choice((4096, 65536, 131072)))
            fd, closing = None, fd
            os.close(closing)
        except OSError as e:
            errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            time.sleep(rng.uniform(0.001, 0.01))
            continue
        os.write(ack_fd, f'{ident}\n'.encode())
    os.write(stat_fd, repr(dict(errors)).encode())


def crash_storm(mount, writers, kills, interval, seed):
    """Writers drop messages while the daemon is SIGKILLed KILLS times at
    random moments and restarted each time; then the writers stop and the
    daemon is unmounted cleanly. Returns the acknowledged ids, each
    writer's error counts, the number of intervals without progress, the
    restart times and the diagnoses of kills that wedged the mount."""
    rng = random.Random(seed)
    os.mkdir(os.path.join(mount.inbox, 'sub'))
    os.chmod(os.path.join(mount.inbox, 'sub'), 0o1777)
    work = tempfile.mkdtemp(prefix='storm-', dir=mount.base)   # outside the mount
    stop_r, stop_w = os.pipe()
    pids, files = [], []
    deadline = time.monotonic() + kills * interval[1] + 120   # a writer never outlives the test
    try:
        for i in range(writers):
            ack = os.path.join(work, f'acks-{i}')
            stats = os.path.join(work, f'stats-{i}')
            ack_fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            stat_fd = os.open(stats, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            files.append((ack, stats))
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(stop_w)
                    drop_privileges(CLIENT_UID + i % 4)
                    _storm_writer(mount.mnt, i, ack_fd, stat_fd, stop_r, deadline,
                                  seed * 1000 + i)
                finally:
                    os._exit(0)
            os.close(ack_fd)
            os.close(stat_fd)
            pids.append(pid)

        def acked_so_far():
            return sum(os.path.getsize(a) for a, _ in files)

        progress, startups, wedges = [], [], []
        for _ in range(kills):
            time.sleep(rng.uniform(*interval))
            progress.append(acked_so_far())
            wedge = crash(mount)
            if wedge:
                wedges.append(wedge)
            time.sleep(rng.uniform(0, 0.2))      # writers meet the stale mount
            startups.append(restart(mount))
        # Serving resumes after the last restart.
        before = acked_so_far()
        wait_until(lambda: acked_so_far() > before, timeout=TIMEOUT,
                   what='writers to be acknowledged after the last restart')
        time.sleep(0.5)
    finally:
        os.close(stop_w)
        status, problems = reap_all(pids, timeout=TIMEOUT * 3, mnt=mount.mnt)
        os.close(stop_r)
    assert not problems, problems
    assert all(os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0 for st in status.values()), status
    mount.unmount()

    acked, errors = [], []
    for ack, stats in files:
        acked += read_file(ack).decode().split()
        text = read_file(stats).decode()
        errors.append(eval(text) if text else {})   # noqa: S307 - our own repr
    stalled = sum(1 for a, b in zip(progress, progress[1:]) if a == b)
    return acked, errors, stalled, startups, wedges


def check_storm(mount, acked, errors):
    assert len(acked) == len(set(acked)), 'a writer acknowledged an id twice'
    found = inbox_files(mount)
    ids = collections.Counter()
    corrupt = []
    for name, data in found.items():
        empty = re.fullmatch(r'(?:sub/)?E(w\d+-\d+)(?:~[^.]*)?\.SVF', name)
        ident = empty.group(1) if empty and data == b'' else message_id(data)
        if ident is None:
            corrupt.append((name, len(data), claimed_id(data)))
        else:
            ids[ident] += 1
    assert not corrupt, (f'{len(corrupt)} partial or corrupt files in the inbox '
                         f'(name, size, claimed id): {corrupt[:10]}')
    twice = {i: n for i, n in ids.items() if n > 1}
    assert not twice, f'{len(twice)} messages delivered more than once: {list(twice.items())[:10]}'
    lost = sorted(set(acked) - set(ids))
    assert not lost, (f'{len(lost)} of {len(acked)} acknowledged messages are not in the '
                      f'inbox: {lost[:10]}')
    assert staged(mount.inbox, acked=True) == [], 'drops left in staging after a clean unmount'
    quarantined, lines = assert_quarantine_accounted(mount)
    # A quarantined file is never the only copy of an acknowledged message.
    bad = {n: claimed_id(d) for n, d in quarantined.items() if claimed_id(d) in set(acked)}
    assert not bad, f'acknowledged messages sitting in incomplete/: {bad}'
    return found, quarantined


def _storm(mount_inboxfs, kills, interval, seed):
    m = mount_inboxfs()
    acked, errors, stalled, startups, wedges = crash_storm(
        m, writers=16, kills=kills, interval=interval, seed=seed)
    try:
        found, quarantined = check_storm(m, acked, errors)
        assert len(m.runs) == kills + 1
        # The storm was a storm: writers were acknowledged and were refused.
        assert len(acked) > 50 * kills, f'only {len(acked)} messages acknowledged'
        assert stalled <= kills // 2, f'no progress in {stalled} of {kills} intervals'
        failures = collections.Counter()
        for e in errors:
            failures.update(e)
        assert failures, 'no writer ever met the dead daemon'
    except AssertionError as e:
        for wedge in wedges:
            e.add_note(wedge)
        raise
    print(f'\ncrash storm: {kills} kills, {len(acked)} acknowledged, {len(found)} in the '
          f'inbox, {len(quarantined)} quarantined, writer errors {dict(failures)}, '
          f'restarts took up to {max(startups):.2f}s, {len(wedges)} wedged')
    assert not wedges, f'{len(wedges)} of {kills} kills wedged the mount; first: {wedges[0]}'


def test_crash_storm(mount_inboxfs):
    """16 clients drop messages continuously; the daemon is killed with
    SIGKILL 10 times at random moments and restarted. Every acknowledged
    message is delivered exactly once, intact; nothing partial is
    delivered; every quarantined file is logged."""
    seed = int(os.environ.get('INBOXFS_SEED', random.randrange(1 << 30)))
    print(f'INBOXFS_SEED={seed}')
    _storm(mount_inboxfs, kills=10, interval=(0.4, 2.0), seed=seed)


@pytest.mark.long
def test_crash_storm_long(mount_inboxfs):
    seed = int(os.environ.get('INBOXFS_SEED', random.randrange(1 << 30)))
    print(f'INBOXFS_SEED={seed}')
    _storm(mount_inboxfs, kills=60, interval=(0.05, 5.0), seed=seed)


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
TRACED = ['fsync', 'fdatasync', 'syncfs', 'sync_file_range', 'renameat2', 'renameat',
          'openat', 'close']


@pytest.mark.parametrize('sub', ['', 'sub'])
def test_close_returns_after_data_and_directories_are_synced(mount_inboxfs, client, tmp_path,
                                                             sub):
    """sync=close (the default): the drop's data is fsynced before it is
    renamed into its directory (the inbox, or a subdirectory), that
    directory and the staging directory are fsynced after the rename, and
    all of it happens before the client's close() returns."""
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

    data_syncs = [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
                  and _fd_path(c.args) == os.path.join(staging, stage_name)]
    assert data_syncs, f'the drop {stage_name} was never fsynced: {relevant}'
    assert data_syncs[-1].end <= rename.start, \
        f'the drop was renamed before its fsync ended: {data_syncs[-1]} / {rename}'
    # What is renamed is what was written: nothing was written after the fsync.
    dir_syncs = {path: [c for c in calls if c.name in ('fsync', 'fdatasync') and c.ret == '0'
                        and _fd_path(c.args) == path and c.start >= rename.end]
                 for path in (inbox, staging)}
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
    close returns."""
    m = mount_inboxfs(linger=2)
    staging = staging_area(os.path.join(os.path.realpath(m.inbox), STAGING), m.pid)
    trace = Strace(m.pid, str(tmp_path / 'strace.log'), TRACED)
    try:
        before, after = client.call(_timed_drop, os.path.join(m.mnt, 'LATER.SVF'), b'later')
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
    wait_until(lambda: os.path.exists(os.path.join(m.inbox, 'LATER.SVF')), timeout=TIMEOUT,
               what='the lingering drop to be published')
    assert read_file(os.path.join(m.inbox, 'LATER.SVF')) == b'later'


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

KILLED_WRITER = r'''
import hashlib, os, sys
def chunk(k):
    return hashlib.sha256(b'%d' % k).digest() * 2048          # 64 KiB
paths = sys.argv[2:]
fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) for p in paths]
mode = sys.argv[1]
k = 0
while True:
    for fd in fds:
        n = os.write(fd, chunk(k))
        assert n == 65536, n
    k += 1
    if mode == 'park' and k == 3:
        sys.stdout.write('%d\n' % (k * 65536)); sys.stdout.flush()
        sys.stdin.read()                       # parked until killed
    elif mode == 'stream' and k % 4 == 0:
        sys.stdout.write('%d\n' % (k * 65536)); sys.stdout.flush()
'''


def stream_prefix(size):
    out = b''.join(hashlib.sha256(b'%d' % k).digest() * 2048 for k in range(size // 65536 + 1))
    return out[:size]


@pytest.mark.parametrize('mode', ['park', 'stream'])
def test_writer_killed_mid_write_delivers_nothing(mounted, client, mode):
    """A writer SIGKILLed with two drops open (parked after 192 KiB, or in
    the middle of a stream of writes): nothing reaches the inbox; both
    drops sit in incomplete/ with exactly the bytes written so far, and
    the log says so."""
    names = ['KILLED1.SVF', 'KILLED2.SVF']
    proc = client.popen([sys.executable, '-c', KILLED_WRITER, mode]
                        + [os.path.join(mounted.mnt, n) for n in names],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        written = 0
        target = 3 * 65536 if mode == 'park' else 40 * 65536
        while written < target:
            assert select.select([proc.stdout], [], [], TIMEOUT)[0], 'writer did not write'
            line = proc.stdout.readline()
            assert line, f'writer died: {proc.wait()}'
            written = int(line)
        assert len(staged(mounted.inbox, acked=True)) == 2
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        helpers.stop_process(proc, sig=signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()

    found = wait_until(lambda: len(incomplete(mounted.inbox)) == 2 and incomplete(mounted.inbox),
                       what='both partial drops in incomplete/')
    assert inbox_files(mounted) == {}
    assert staged(mounted.inbox, acked=True) == []
    for name, data in found.items():
        assert len(data) >= written, (name, len(data), written)
        assert data == stream_prefix(len(data)), f'{name}: not the bytes written'
        if mode == 'park':
            assert len(data) == written
    files, lines = assert_quarantine_accounted(mounted)
    assert sorted(lines[n][0] for n in files) == names
    time.sleep(0.3)                                       # nothing shows up late either
    assert inbox_files(mounted) == {}
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
    part = stream_prefix(300_000)
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


# --------------------------------------------------------- (4) ENOSPC, R11

class SmallFs:
    """A small ext4 image loop-mounted for one test; the inboxfs mount over
    it (register it with .uses(mount)) is unmounted first at teardown."""

    def __init__(self, size_mib):
        self.base = helpers.make_base_dir('inboxfs-enospc-')
        self.image = os.path.join(self.base, 'fs.img')
        self.root = os.path.join(self.base, 'fs')
        self.mounts = []
        os.mkdir(self.root)
        with open(self.image, 'wb') as f:
            f.truncate(size_mib << 20)
        for cmd in (['mkfs.ext4', '-q', '-F', '-m', '0', '-N', '4096', self.image],
                    ['mount', '-o', 'loop', self.image, self.root]):
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=TIMEOUT * 3)
            if proc.returncode != 0:
                pytest.skip(f'{" ".join(cmd[:2])} failed: {proc.stderr.strip()}')
        self.mounted = True
        self.inbox = os.path.join(self.root, 'inbox')
        os.mkdir(self.inbox)
        os.chmod(self.inbox, 0o1777)

    def uses(self, mount):
        self.mounts.append(mount)
        return mount

    def free(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def cleanup(self):
        try:
            for m in self.mounts:
                try:
                    m.unmount()
                except (AssertionError, OSError, TimeoutError):
                    pass                            # the mount fixture reports it
                for run in m.runs:
                    if run.proc.poll() is None:
                        helpers.stop_process(run.proc)
        finally:
            if self.mounted:
                proc = subprocess.run(['umount', self.root], capture_output=True,
                                      timeout=TIMEOUT * 3)
                if proc.returncode != 0:
                    subprocess.run(['umount', '-l', self.root], capture_output=True,
                                   timeout=TIMEOUT * 3)
                self.mounted = False
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def small_fs(request):
    """small_fs(size_mib=8): a fresh loop-mounted ext4 of that size."""
    made = []

    def factory(size_mib=8):
        if os.geteuid() != 0 or not shutil.which('mkfs.ext4'):
            pytest.skip('a loop-mounted ext4 needs root and mkfs.ext4')
        fs = SmallFs(size_mib)
        made.append(fs)
        return fs

    yield factory
    for fs in reversed(made):
        fs.cleanup()


def _fill(mnt, index, stop_after, deadline, seed):
    """A client dropping 64..512 KiB messages until it has met ENOSPC
    STOP_AFTER times. Returns (acknowledged ids, [(stage, errno name)])."""
    rng = random.Random(seed)
    acked, failures = [], []
    seq = 0
    while len(failures) < stop_after and time.monotonic() < deadline:
        seq += 1
        ident = f'c{index}-{seq:05d}'
        data = message(ident, rng.randrange(64 << 10, 512 << 10), rng)
        stage, fd = 'open', None
        try:
            fd = os.open(os.path.join(mnt, f'FULL{seq % 7}.SVF'),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            stage = 'write'
            write_all(fd, data)
            stage = 'close'
            fd, closing = None, fd
            os.close(closing)
        except OSError as e:
            then = ''
            if fd is not None:                 # what any program does after a failed write
                try:
                    os.close(fd)
                    then = ', then close() returned 0'
                except OSError as e2:
                    then = f', then close() failed with {errno.errorcode.get(e2.errno)}'
            failures.append((stage, errno.errorcode.get(e.errno, e.errno), ident + then))
            continue
        acked.append(ident)
    return acked, failures


def _drops(mnt, index, count):
    acked = []
    for seq in range(count):
        ident = f'after{index}-{seq}'
        fd = os.open(os.path.join(mnt, 'AFTER.SVF'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, message(ident, 100_000))
        finally:
            os.close(fd)
        acked.append(ident)
    return acked


def check_inbox_complete(m, acked, failures=()):
    found = inbox_files(m)
    found.pop('BALLAST', None)                 # the consumer's backlog, not a message
    ids = collections.Counter()
    partial = []
    for name, data in found.items():
        ident = message_id(data)
        if ident is None:
            partial.append(f'{name} ({len(data)} bytes, claims {claimed_id(data)})')
        else:
            ids[ident] += 1
    assert not partial, (f'{len(partial)} partial files published: {partial}; what the '
                         f'clients saw: {[f for f in failures if f[0] != "open"]}')
    assert not [i for i, n in ids.items() if n > 1], 'a message was delivered twice'
    lost = sorted(set(acked) - set(ids))
    assert not lost, f'acknowledged and lost: {lost}'
    return ids


def test_full_disk(small_fs, mount_inboxfs):
    """The inbox's filesystem fills: each client gets ENOSPC at open, write
    or close; nothing partial is ever published; once space is freed new
    drops succeed; every acknowledged drop is intact."""
    small = small_fs(8)
    ballast = os.path.join(small.inbox, 'BALLAST')        # the consumer's backlog
    with open(ballast, 'wb') as f:
        f.write(b'\0' * (2 << 20))
    m = small.uses(mount_inboxfs(small.inbox))
    m.allow_log(r'No space left on device')
    clients = 4
    deadline = time.monotonic() + TIMEOUT * 6

    results = helpers.run_together([(CLIENT_UID + i, _fill, (m.mnt, i, 3, deadline, i))
                                    for i in range(clients)], timeout=TIMEOUT * 12)

    acked = [ident for a, _ in results for ident in a]
    failures = [f for _, seen in results for f in seen]
    for i, (_, seen) in enumerate(results):
        assert seen, f'client {i} never met a full disk'
        assert all(err == 'ENOSPC' for _, err, _ in seen), \
            f'client {i} failed with something else than ENOSPC: {seen}'
    assert acked, 'nothing was acknowledged before the disk filled'
    check_inbox_complete(m, acked, failures)
    wait_until(lambda: staged(m.inbox, acked=True) == [], what='failed drops to leave staging')
    assert_quarantine_accounted(m)

    # Space returns (the consumer deletes what it processed): drops succeed.
    os.unlink(ballast)
    after = helpers.run_together([(CLIENT_UID + i, _drops, (m.mnt, i, 3))
                                  for i in range(clients)], timeout=TIMEOUT * 12)
    check_inbox_complete(m, acked + [i for a in after for i in a])
    wait_until(lambda: staged(m.inbox, acked=True) == [], what='staging to empty')
    assert_quarantine_accounted(m)
    stages = collections.Counter(f[0] for f in failures)
    print(f'\nfull disk: {len(acked)} acknowledged before, ENOSPC at {dict(stages)}')
