"""The transport (fs/transport/: transport.c, uring.c; README "Options",
uring=): FUSE over io_uring where the kernel offers it, /dev/fuse
otherwise, with one log line saying which; FUSE_HANDLE_KILLPRIV_V2
negotiated, set-ID bits still cleared as the kernel would. Tests that
change the fuse module's enable_uring restore it, whatever happens (the
enable_uring fixture)."""

import contextlib
import errno
import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest

import helpers
from helpers import TIMEOUT, Unavailable, errno_of, uring_param

KILLPRIV_V2 = 1 << 28
OBS_UID = 60010


@pytest.fixture
def enable_uring():
    """enable_uring(True|False): set for the rest of the test, restored at
    teardown even if the test fails."""
    stack = contextlib.ExitStack()

    def setter(value):
        try:
            stack.enter_context(uring_param(value))
        except Unavailable as e:
            pytest.skip(str(e))

    with stack:
        yield setter


def transport_lines(m, timeout=10):
    """The log lines that say which transport serves (written once the INIT
    reply is out, maybe just after the mount shows)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in m.log().splitlines() if 'transport: ' in line
                 and 'INIT offered' not in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def exercise(m, client):
    """A client drop, an observer's file written and read back in 1 MiB
    pieces (the largest requests), a directory listing."""
    assert client.call(_drop, os.path.join(m.mnt, 'A.SVF'), b'drop') is None
    big = os.urandom(3 * 1024 * 1024 + 17)
    with open(os.path.join(m.mnt, 'big'), 'wb') as f:
        f.write(big)
    with open(os.path.join(m.mnt, 'big'), 'rb') as f:
        assert f.read() == big
    with open(os.path.join(m.inbox, 'A.SVF'), 'rb') as f:
        assert f.read() == b'drop'
    assert {'A.SVF', 'big'} <= set(os.listdir(m.mnt))


def _drop(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ------------------------------------------------------------- io_uring

def test_io_uring_serves_when_the_kernel_offers_it(mount_inboxfs, client, enable_uring):
    enable_uring(True)
    m = mount_inboxfs()
    assert [line for line in transport_lines(m) if 'io_uring' in line], m.log()
    exercise(m, client)


def test_fallback_to_dev_fuse_when_enable_uring_is_0(mount_inboxfs, client, enable_uring):
    enable_uring(False)
    m = mount_inboxfs()
    lines = transport_lines(m)
    assert len(lines) == 1 and '/dev/fuse' in lines[0] and 'enable_uring' in lines[0], lines
    exercise(m, client)


def test_uring_no_keeps_dev_fuse(mount_inboxfs, client, enable_uring):
    enable_uring(True)
    m = mount_inboxfs(uring='no')
    lines = transport_lines(m)
    assert len(lines) == 1 and '/dev/fuse (uring=no)' in lines[0], lines
    exercise(m, client)


def test_a_bad_uring_value_is_refused(run_inboxfs, tmp_path):
    (tmp_path / 'inbox').mkdir()
    (tmp_path / 'mnt').mkdir()
    proc = run_inboxfs('-f', '-o', 'uring=maybe', tmp_path / 'inbox', tmp_path / 'mnt')
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ['inboxfs: uring=maybe: expected yes or no']


def test_io_uring_crash_and_recovery(mount_inboxfs, client, enable_uring):
    """kill -9 while serving over io_uring: the next start (over the stale
    mount) recovers and serves again."""
    enable_uring(True)
    m = mount_inboxfs()
    s = client.session()
    s.call(_drop, os.path.join(m.mnt, 'B.SVF'), b'before')
    m.crash()
    m.recover()
    assert [line for line in transport_lines(m) if 'io_uring' in line], m.log()
    exercise(m, client)
    with open(os.path.join(m.inbox, 'B.SVF'), 'rb') as f:
        assert f.read() == b'before'


def test_io_uring_many_writers(mount_inboxfs, as_client, enable_uring):
    """More concurrent requests than ring entries: all are served."""
    enable_uring(True)
    m = mount_inboxfs(sync='close')
    procs = [as_client(60100 + i).popen(
        ['/bin/sh', '-c', f'for n in $(seq 40); do echo {i}-$n > {m.mnt}/m{i}-$n.SVF; done'])
        for i in range(12)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert len(m.backing_files()) == 12 * 40


# An fsync() of a regular file that takes INBOXFS_SLOW_FSYNC_MS before doing
# its work: a disk that flushes slowly.
SLOW_FSYNC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

int fsync(int fd)
{
	static int (*real)(int);
	const char *ms = getenv("INBOXFS_SLOW_FSYNC_MS");
	struct stat st;

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (ms && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		long n = atol(ms);
		struct timespec pause = { n / 1000, (n % 1000) * 1000000L };

		nanosleep(&pause, NULL);
	}
	return real(fd);
}

/* The one-commit durable close's data sync (core/durable.h), where the
 * tests' directory is on journaled ext4. */
int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags)
{
	static int (*real)(int, off_t, off_t, unsigned int);
	const char *ms = getenv("INBOXFS_SLOW_FSYNC_MS");

	if (!real)
		real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
	if (ms) {
		long n = atol(ms);
		struct timespec pause = { n / 1000, (n % 1000) * 1000000L };

		nanosleep(&pause, NULL);
	}
	return real(fd, offset, nbytes, flags);
}
"""

# Stats a new name in DIR (a LOOKUP each time: nothing cached) every 10 ms
# from CPU argv[2] until argv[3] exists; prints the slowest, in seconds.
STAT_PROBE = """
import os, sys, time
d, cpu, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.sched_setaffinity(0, {cpu})
worst, n = 0.0, 0
while not os.path.exists(stop):
    n += 1
    t = time.monotonic()
    try:
        os.stat(os.path.join(d, 'probe-%d' % n))
    except FileNotFoundError:
        pass
    worst = max(worst, time.monotonic() - t)
    time.sleep(0.01)
print(worst, n)
"""

SLOW_FSYNC_MS = 1500


def _flushes_under_stat_probes(m, who, tmp_path, tag, size=1 << 20, how='close'):
    """WHO (a helpers.Client: one process), 4 threads on the first CPU,
    writing 4 files of SIZE bytes at once and then closing them (a
    client's durable drops) or fsyncing them (an observer's files, HOW
    'fsync'); a prober per CPU stats meanwhile. Returns {cpu: worst stat
    latency} and the 4 threads' wall time."""
    stop = tmp_path / f'stop-{tag}'
    cpus = sorted(os.sched_getaffinity(0))
    probes = [subprocess.Popen([sys.executable, '-c', STAT_PROBE, m.mnt, str(cpu), str(stop)],
                               stdout=subprocess.PIPE, text=True) for cpu in cpus]
    try:
        time.sleep(0.5)

        def four_at_once():
            import threading
            os.sched_setaffinity(0, {cpus[0]})
            errors = []

            def one(i):
                path = os.path.join(m.mnt, f'{tag}{i}.SVF')
                try:
                    if how == 'close':
                        helpers.create_excl(path, b'x' * size)
                    else:
                        with open(path, 'wb') as f:
                            f.write(b'x' * size)
                            f.flush()
                            os.fsync(f.fileno())
                except OSError as e:
                    errors.append(e)
            threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
            t = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return errors, time.monotonic() - t
        errors, took = who.call(four_at_once, timeout=TIMEOUT * 6)
        assert errors == []
        time.sleep(0.3)
    finally:
        stop.write_text('')
        outs = []
        for p in probes:
            try:
                outs.append(p.communicate(timeout=TIMEOUT * 3)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise
    assert all(p.returncode == 0 for p in probes), outs
    return {cpu: float(out.split()[0]) for cpu, out in zip(cpus, outs)}, took


def preload(tmp_path, monkeypatch, name, source, env=()):
    """Daemons started from now on (helpers.WRAPPER) run with SOURCE (C)
    built and preloaded, and the VAR=VALUE strings of ENV set."""
    src, lib = tmp_path / f'{name}.c', tmp_path / f'{name}.so'
    src.write_text(source)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', *env,
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)


def slow_fsync_preload(tmp_path, monkeypatch, ms):
    """Daemons started from now on take MS longer for each fsync of a
    regular file (SLOW_FSYNC, by LD_PRELOAD)."""
    preload(tmp_path, monkeypatch, 'slowfsync', SLOW_FSYNC, [f'INBOXFS_SLOW_FSYNC_MS={ms}'])


def mount_over(mount_inboxfs, transport, **options):
    """A mount over io_uring ('uring': the fuse module's enable_uring set
    for the mount only, the kernel reads it at INIT; skipped where the
    kernel has none) or /dev/fuse ('dev')."""
    if transport != 'uring':
        return mount_inboxfs(uring='no', **options)
    try:
        with uring_param(True):
            m = mount_inboxfs(**options)
            lines = transport_lines(m)
    except Unavailable as e:
        pytest.skip(str(e))
    if not [line for line in lines if 'io_uring' in line]:
        pytest.skip('no FUSE over io_uring: ' + ' '.join(lines))
    return m


@pytest.mark.parametrize('how', ['close', 'fsync'])
def test_disk_flushes_do_not_stall_other_requests(mount_inboxfs, client, tmp_path, monkeypatch,
                                                  how):
    """No thread that serves requests waits for a disk flush: while one
    process's 4 threads on one CPU close 4 durable drops (a client) or
    fsync 4 files (an observer), each fsync taking SLOW_FSYNC_MS
    (LD_PRELOAD), a stat from another process on any CPU is answered in
    well under that, over io_uring (4 ring threads per CPU) as over
    /dev/fuse. Each close or fsync still returns only after its fsync."""
    slow_fsync_preload(tmp_path, monkeypatch, SLOW_FSYNC_MS)
    who = client if how == 'close' else helpers.Client(0)     # root: an observer
    worst = {}
    for transport in ('uring', 'dev'):
        m = mount_over(mount_inboxfs, transport, sync='close')
        tag = transport[0].upper()
        worst[transport], took = _flushes_under_stat_probes(m, who, tmp_path, tag, how=how)
        assert took >= SLOW_FSYNC_MS / 1000          # they waited for their fsyncs
        assert helpers.inbox_files(m) == {f'{tag}{i}.SVF': b'x' * (1 << 20) for i in range(4)}
        print(f'\n{how}, {transport}: worst stat latency per CPU {worst[transport]}, '
              f'the 4 threads took {took:.2f} s')
        m.unmount()
    for transport, per_cpu in worst.items():
        assert max(per_cpu.values()) < SLOW_FSYNC_MS / 1000 / 3, (transport, worst)


def _closes_at_once(mnt, tag, n):
    """N threads each create-new, write and close a drop: {name: 0 or the
    errno of the call that failed}."""
    import threading
    results = {}

    def one(i):
        name = f'{tag}{i}.SVF'
        try:
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, name.encode())
            os.close(fd)
            results[name] = 0
        except OSError as e:
            results[name] = e.errno
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


@pytest.mark.parametrize('transport', ['uring', 'dev'])
def test_connection_aborted_during_durable_closes(mount_inboxfs, client, tmp_path, monkeypatch,
                                                  transport):
    """The FUSE connection aborted (umount -f, or fusectl's abort) while
    durable closes wait for their fsync (SLOW_FSYNC_MS, a worker of
    syncpool.c each): their writers' closes fail (ECONNABORTED), so none
    of those drops may be delivered (R6); they go to incomplete/ when the
    daemon lets their handles go. The daemon itself stays alive and would
    otherwise publish each drop after its fsync, for nobody to be told."""
    slow_fsync_preload(tmp_path, monkeypatch, SLOW_FSYNC_MS)
    m = mount_over(mount_inboxfs, transport, sync='close')
    m.allow_log(r'quarantine|never saw a successful close|publishing|acknowledging')
    results = {}
    closer = threading.Thread(target=lambda: results.update(
        client.call(_closes_at_once, m.mnt, 'A', 4, timeout=TIMEOUT * 6)))
    closer.start()
    try:
        # Every close waits in its fsync once the four drops are staged.
        helpers.wait_until(lambda: len(helpers.staged(m.inbox)) == 4 or not closer.is_alive(),
                           what='four drops staged')
        time.sleep(SLOW_FSYNC_MS / 1000 / 3)
        done = helpers.abort_fuse(m.mnt)
        assert done.startswith('aborted'), done
    finally:
        closer.join(TIMEOUT * 6)
    assert len(results) == 4, results
    assert set(results.values()) <= {0, errno.ECONNABORTED, errno.ENOTCONN}, results
    m.run.proc.wait(timeout=TIMEOUT * 3)     # the connection is gone: it stops
    delivered = helpers.inbox_files(m)
    assert set(delivered) == {n for n, e in results.items() if e == 0}, (results, delivered)
    helpers.wait_until(lambda: len(helpers.incomplete(m.inbox)) + len(delivered) == 4,
                       what='the failed closes\' drops in incomplete/')


# ------------------------------------------------- FUSE_HANDLE_KILLPRIV_V2

def offered_flags(m):
    found = re.search(r'INIT offered 0x([0-9a-f]+), answered 0x([0-9a-f]+)', m.log())
    assert found, m.log()
    return int(found.group(1), 16), int(found.group(2), 16)


def test_killpriv_v2_spares_a_capability_read_per_write(mount_inboxfs):
    """Through the page cache, the kernel read security.capability before
    every write; with FUSE_HANDLE_KILLPRIV_V2 it asks once per inode."""
    m = mount_inboxfs(debug=True, passthrough='no')   # its writes are the daemon's
    offered, answered = offered_flags(m)
    if not offered & KILLPRIV_V2:
        pytest.skip('the kernel does not offer FUSE_HANDLE_KILLPRIV_V2')
    assert answered & KILLPRIV_V2
    fd = os.open(os.path.join(m.mnt, 'f'), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for _ in range(40):
            os.write(fd, b'y' * 4096)
    finally:
        os.close(fd)
    ops = re.findall(r'opcode: (\w+)', m.log())
    assert ops.count('WRITE') >= 40
    assert ops.count('GETXATTR') <= 1, ops.count('GETXATTR')


def _backing_file(m, name, mode, data=b'#!/bin/sh\n'):
    path = os.path.join(m.inbox, name)
    with open(path, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize('how', ['truncate', 'write', 'truncating-open', 'fallocate'])
def test_root_keeps_setid(mount_inboxfs, how):
    """Root (CAP_FSETID) keeps set-ID bits on everything but chown."""
    m = mount_inboxfs()
    path = _backing_file(m, 'prog', 0o6775, b'' if how == 'truncating-open' else b'#!/bin/sh\n')
    target = os.path.join(m.mnt, 'prog')
    if how == 'truncate':
        os.truncate(target, 3)
    elif how == 'write':
        fd = os.open(target, os.O_RDWR)
        os.pwrite(fd, b'#!', 0)
        os.close(fd)
    elif how == 'truncating-open':
        os.close(os.open(target, os.O_WRONLY | os.O_TRUNC))
    else:
        fd = os.open(target, os.O_WRONLY)
        os.posix_fallocate(fd, 0, 8192)
        os.close(fd)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o6775


@pytest.mark.parametrize('uid', [0, OBS_UID], ids=['root', 'observer'])
def test_chown_clears_setuid_as_on_a_local_file(mount_inboxfs, as_client, uid):
    m = mount_inboxfs(observers=f'root:{OBS_UID}')
    path = _backing_file(m, 'prog', 0o6755)
    os.chown(path, OBS_UID, OBS_UID)
    os.chmod(path, 0o6755)
    target = os.path.join(m.mnt, 'prog')
    if uid == 0:
        os.chown(target, OBS_UID, OBS_UID)
    else:
        as_client(uid).call(os.chown, target, OBS_UID, OBS_UID)
    assert os.stat(path).st_mode & (stat.S_ISUID | stat.S_ISGID) == 0, oct(os.stat(path).st_mode)


def test_a_non_root_observers_page_cache_writes_clear_setid_each_time(mount_inboxfs, as_client):
    """Set again between two writes of one open file, the bits are cleared
    again (the kernel's once-per-inode shortcut must not skip it)."""
    m = mount_inboxfs(observers=f'root:{OBS_UID}')
    path = _backing_file(m, 'prog', 0o6777)
    obs = as_client(OBS_UID).session()
    fd = obs.call(os.open, os.path.join(m.mnt, 'prog'), os.O_RDWR)
    obs.call(os.pwrite, fd, b'#!', 0)
    assert os.stat(path).st_mode & 0o6000 == 0
    os.chmod(os.path.join(m.mnt, 'prog'), 0o6777)     # root, through the mount
    obs.call(os.pwrite, fd, b'#!', 0)
    assert os.stat(path).st_mode & 0o6000 == 0, oct(os.stat(path).st_mode)
    obs.call(os.close, fd)
    assert errno_of(os.stat, os.path.join(m.mnt, 'nope')) == errno.ENOENT


# ------------------------------------------------------------ passthrough

def passthrough_on(m):
    if 'passthrough: on' not in '\n'.join(transport_lines(m) + m.log().splitlines()):
        pytest.skip('the kernel does not offer FUSE passthrough')


@pytest.fixture
def pt(mount_inboxfs):
    m = mount_inboxfs(passthrough='yes', observers=f'root:{OBS_UID}')
    passthrough_on(m)
    return m


def test_passthrough_reads_and_writes_the_backing_file(pt, client):
    exercise(pt, client)
    data = os.urandom(5 * 1024 * 1024)
    with open(os.path.join(pt.mnt, 'rw'), 'wb') as f:
        f.write(data)
    with open(os.path.join(pt.mnt, 'rw'), 'r+b') as f:
        f.seek(4096)
        f.write(b'patched')
        f.flush()
        f.seek(0)
        got = f.read()
    want = data[:4096] + b'patched' + data[4096 + 7:]
    assert got == want
    with open(os.path.join(pt.inbox, 'rw'), 'rb') as f:
        assert f.read() == want
    assert os.stat(os.path.join(pt.mnt, 'rw')).st_size == len(data)
    import mmap
    with open(os.path.join(pt.mnt, 'rw'), 'rb') as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[4096:4103] == b'patched'


def test_passthrough_and_a_truncating_open_of_the_same_file(pt):
    """R3 writes a truncating open's data beside the file; that open cannot
    be passthrough, and the kernel refuses a non-passthrough open of an
    inode open passthrough: it fails with ETXTBSY while another opener
    holds the file, and writes beside as ever once it is closed."""
    path = os.path.join(pt.mnt, 'f')
    with open(os.path.join(pt.inbox, 'f'), 'wb') as f:
        f.write(b'precious')
    reader = open(path, 'rb')
    try:
        assert errno_of(os.open, path, os.O_WRONLY | os.O_TRUNC) == errno.ETXTBSY
        assert reader.read() == b'precious'
    finally:
        reader.close()
    with open(path, 'wb') as f:
        f.write(b'new')
    assert sorted(open(os.path.join(pt.inbox, n), 'rb').read()
                  for n in pt.backing_files()) == [b'new', b'precious']


def test_passthrough_rewrite_right_after_close(pt):
    """close() returns before the daemon hears of it (RELEASE): a file
    written and closed, then rewritten at once, is written beside, never
    refused (the ThreadSanitizer build showed the ETXTBSY)."""
    for i in range(40):
        path = os.path.join(pt.mnt, f'f{i}')
        for v in (b'old', b'new'):
            with open(path, 'wb') as f:
                f.write(v)
    assert len(pt.backing_files()) == 80


def test_passthrough_and_a_non_root_writer(mount_inboxfs, as_client):
    """A non-root observer's writable open is passthrough like any other
    (its WRITE never reaches the daemon), and its writes clear set-ID bits
    as without passthrough, whether it opened first or joined a root
    reader's passthrough open; opening does not clear them (as on a local
    file). Root's own writes through passthrough clear them too: the one
    backing file of an inode is written without CAP_FSETID."""
    pt = mount_inboxfs(passthrough='yes', observers=f'root:{OBS_UID}', debug=True)
    passthrough_on(pt)
    path = _backing_file(pt, 'prog', 0o6777, b'#!/bin/sh\n' * 100)
    target = os.path.join(pt.mnt, 'prog')
    obs = as_client(OBS_UID).session()
    fd = obs.call(os.open, target, os.O_RDWR)     # first: passthrough
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o6777
    with open(target, 'rb') as f:                 # root, alongside
        assert f.read(10) == b'#!/bin/sh\n'
    obs.call(os.pwrite, fd, b'#!', 0)
    assert os.stat(path).st_mode & 0o6000 == 0
    obs.call(os.close, fd)
    os.chmod(path, 0o6777)
    with open(target, 'rb') as f:                 # root first: passthrough
        fd = obs.call(os.open, target, os.O_RDWR)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o6777
        obs.call(os.pwrite, fd, b'#!', 0)
        obs.call(os.close, fd)
        assert os.stat(path).st_mode & 0o6000 == 0, oct(os.stat(path).st_mode)
        assert f.read(2) == b'#!'
    os.chmod(path, 0o6777)
    with open(target, 'r+b') as f:                # root writes, passthrough
        f.write(b'#!')
    assert os.stat(path).st_mode & 0o6000 == 0, oct(os.stat(path).st_mode)
    assert re.findall(r'opcode: (\w+)', pt.log()).count('WRITE') == 0


def test_passthrough_writes_clear_setid_set_after_the_open(pt, as_client):
    """Set-ID bits set after a non-root observer's passthrough open are
    cleared by its next write, as without passthrough: the kernel writes
    the backing file with the credentials it was registered with, and those
    must not carry CAP_FSETID (else the file, run by anyone, runs as root)."""
    path = _backing_file(pt, 'prog', 0o777, b'#!/bin/sh\n' * 100)
    target = os.path.join(pt.mnt, 'prog')
    obs = as_client(OBS_UID).session()
    with open(target, 'rb') as f:                 # root first: passthrough
        fd = obs.call(os.open, target, os.O_RDWR)
        try:
            os.chmod(target, 0o6777)              # root, through the mount
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o6777
            obs.call(os.pwrite, fd, b'#!', 0)
            assert os.stat(path).st_mode & 0o6000 == 0, oct(os.stat(path).st_mode)
            assert os.stat(target).st_mode & 0o6000 == 0, oct(os.stat(target).st_mode)
            os.chmod(target, 0o6777)              # and again, the same open
            obs.call(os.pwrite, fd, b'#!', 0)
            assert os.stat(path).st_mode & 0o6000 == 0, oct(os.stat(path).st_mode)
        finally:
            obs.call(os.close, fd)
        assert f.read(2) == b'#!'


def test_passthrough_never_serves_client_drops(pt, client):
    """A drop's writes reach the daemon: a full disk still fails it
    (R11). Here: its bytes are counted, which only the daemon does."""
    client.call(_drop, os.path.join(pt.mnt, 'C.SVF'), b'x' * 5000)
    with open(os.path.join(pt.mnt, '.inboxfs-stats')) as f:
        stats = f.read()
    assert re.search(r'\bbytes\D+5000\b', stats), stats


FAILING_SUBMIT = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>

/* The first 3 submissions of answers fail, as a kernel out of memory
 * would fail them, without taking anything from the ring. */
static atomic_int failures = 3;

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
	int (*real)(struct io_uring *, unsigned) =
		(int (*)(struct io_uring *, unsigned))dlsym(RTLD_NEXT, "io_uring_submit_and_wait");

	if (atomic_fetch_sub(&failures, 1) > 0)
		return -EAGAIN;
	return real(ring, wait_nr);
}
'''


def test_an_answer_whose_submission_fails_is_submitted_again(mount_inboxfs, client, tmp_path,
                                                             monkeypatch):
    """Over io_uring an answer is queued in its ring and submitted with the
    ring thread's next wait. A submission that fails (here the first 3, by
    LD_PRELOAD) is logged and tried again within 100 ms: the ring thread
    keeps serving, and every close is answered and its drop delivered."""
    preload(tmp_path, monkeypatch, 'failsubmit', FAILING_SUBMIT)
    m = mount_over(mount_inboxfs, 'uring')
    m.allow_log('cannot answer a request')
    session = client.session()
    try:
        for i in range(4):
            session.call(_drop, os.path.join(m.mnt, f'R{i}.SVF'), b'answered %d' % i)
    finally:
        session.end()
    assert helpers.inbox_files(m) == {f'R{i}.SVF': b'answered %d' % i for i in range(4)}
    assert 'cannot answer a request: Resource temporarily unavailable' in m.log(), m.log()
