"""R5, R6 through a power cut: the invariant, a writer's close() succeeds
if and only if its drop will be delivered exactly once, checked on the
disk's own state rather than on the live filesystem.

The inbox is on a loop-mounted ext4 whose journal commits only when asked
(commit=600, no background inode table zeroing): nothing reaches the image file unless inboxfs makes it
durable. Writers drop messages as fast as they can, with colliding names;
then the daemon and the writers are frozen (SIGSTOP) mid-storm, the loop
device's writes are let drain, and the image file is copied: that copy is
the disk as a power cut at that moment would leave it (what the device
got; a loop device has no volatile cache to lose besides). The copy is
repaired as a boot would (e2fsck replays the journal), mounted, and a new
inboxfs over it recovers the dead instance's staging area. Then every
close that had returned success must be in the inbox exactly once and
intact, nothing partial may be in the inbox, and nothing may be both in
the inbox and set aside. With linger=, the cut finds acknowledged drops
not yet published, which recovery must deliver; where publication is
link() and unlink(), it may find a drop with both names. On this journaled
ext4 a durable close takes one journal commit (core/durable.h: the drop's
data written out, then the directory's fsync commits it with the name), and
so on XFS, run too (its log replayed by the mount instead of e2fsck);
datasync=fsync runs the same storm on the two-sync path. With sync=none the
same run must lose acknowledged messages, and so must the one-commit path
with the data's write-out left out (an LD_PRELOAD): the method sees what is
not on the disk, and a publication that comes before its data."""

import collections
import os
import random
import signal
import subprocess
import time
import traceback

import pytest

from helpers import (CLIENT_UID, TIMEOUT, drop_privileges, incomplete, inbox_files, message,
                     message_id, reap_all, storm_writer, wait_until)
from test_transport import preload


def _drops(who, cycle):
    """Writer WHO's messages, up to 24,000 bytes. Legacy names: every
    writer cycles through the same CYCLE, so drops collide with each other
    and with what is published already (0: a name of its own each time)."""
    rng = random.Random(who)
    k = 0
    while True:
        ident = f'{who}-{k}'
        name = f'M{k % cycle:02d}.SVF' if cycle else f'{ident}.SVF'
        yield ident, name, message(ident, rng.randrange(1, 24_000), rng), 65536
        k += 1


def _start_writer(mnt, who, acks, cycle):
    """A forked client (CLIENT_UID) running storm_writer() for ever; the
    first error ends it (its traceback on stderr, exit status 1)."""
    ack_fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.fork()
    if pid == 0:
        try:   # never return into pytest from the child
            drop_privileges(CLIENT_UID)
            storm_writer(mnt, ack_fd, _drops(who, cycle))
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    os.close(ack_fd)
    return pid


WRITERS = 4


def _drained(device):
    """No I/O in flight on the loop device (its inflight counters)."""
    with open(f'/sys/block/{device}/inflight') as f:
        return f.read().split() == ['0', '0']


def _cut_power(fs, m, writers, crash_image):
    """Freeze the daemon, then the writers; copy the image once the device
    is idle for a while."""
    os.kill(m.pid, signal.SIGSTOP)
    for pid in writers:
        os.kill(pid, signal.SIGSTOP)
    device, quiet, deadline = fs.device(), 0, time.monotonic() + TIMEOUT
    while quiet < 10 and time.monotonic() < deadline:
        quiet = quiet + 1 if _drained(device) else 0
        time.sleep(0.02)
    assert quiet >= 10, f'{device} never went idle'
    subprocess.run(['cp', '--sparse=always', fs.image, crash_image], check=True,
                   timeout=TIMEOUT * 3)


def _boot(image):
    """What a boot does to the disk: e2fsck replays the journal (0: clean,
    1: fixed)."""
    proc = subprocess.run(['e2fsck', '-fy', image], capture_output=True, text=True,
                          timeout=TIMEOUT * 3)
    assert proc.returncode in (0, 1), f'e2fsck: {proc.returncode}\n{proc.stdout}'


# renameat2() without RENAME_NOREPLACE, as on GlusterFS: publication is
# link() then unlink(), and a cut between them leaves a staged file with
# two links for recovery to repair.
NO_NOREPLACE = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
	      unsigned int flags)
{
	if (flags & RENAME_NOREPLACE) {
		errno = EINVAL;
		return -1;
	}
	return syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}
'''

# sync_file_range() and fsync() of regular files do nothing: the drop's
# data is not written out before its rename, only the directory is synced.
NO_DATA_SYNC = r'''
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags)
{
	return 0;
}

int fsync(int fd)
{
	struct stat sb;

	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
		return 0;
	return syscall(SYS_fsync, fd);
}
'''

# sync=close publishing at close; sync=close with linger=2, where the cut
# finds drops acknowledged (staged as a.*) and not yet published, which
# recovery must deliver; publication by link() and unlink(); the two-sync
# path (datasync=fsync); the controls: sync=none, and the one-commit path
# without its data's write-out.
CASES = {'close': dict(sync='close'), 'linger': dict(sync='close', linger=2),
         'link': dict(sync='close'), 'fsync': dict(sync='close', datasync='fsync'),
         'none': dict(sync='none'), 'nodatasync': dict(sync='close'),
         # XFS: the one-commit close there too (its log replayed by the mount).
         'xfs': dict(sync='close'), 'xfs-linger': dict(sync='close', linger=2),
         'xfs-nodatasync': dict(sync='close')}
LOSES = ('none', 'nodatasync', 'xfs-nodatasync')


@pytest.mark.parametrize('case', list(CASES))
def test_power_cut_mid_storm(loop_fs, mount_inboxfs, tmp_path, monkeypatch, case):
    opts = CASES[case]
    if case == 'link':
        preload(tmp_path, monkeypatch, 'nonoreplace', NO_NOREPLACE)
    if case.endswith('nodatasync'):
        preload(tmp_path, monkeypatch, 'nodatasync', NO_DATA_SYNC)
    xfs = case.startswith('xfs')
    fs = (loop_fs(320, fstype='xfs') if xfs else
          loop_fs(256, options=('commit=600', 'noinit_itable')))
    subprocess.run(['sync', '-f', fs.root], check=True, timeout=TIMEOUT * 3)
    m = fs.uses(mount_inboxfs(fs.inbox, **opts))
    m.allow_log(r'.')                   # killed frozen: its log ends anywhere
    if case == 'link':
        assert 'link() and unlink()' in m.log(), m.log()
    if opts['sync'] == 'close':
        path = 'fsync of the drop' if case == 'fsync' else 'one journal commit'
        assert f'durable close by {path}' in m.log(), m.log()
    acks = os.path.join(fs.base, 'acks')            # outside the image
    os.mkdir(acks)
    # A lingering drop keeps its name taken for its session: no cycling.
    cycle = 0 if 'linger' in opts else 32
    writers = []
    crash_image = os.path.join(fs.base, 'crash.img')
    try:
        for i in range(WRITERS):
            writers.append(_start_writer(m.mnt, f'W{i}', os.path.join(acks, f'W{i}'), cycle))
        wait_until(lambda: all(os.path.exists(os.path.join(acks, f'W{i}')) and
                               os.path.getsize(os.path.join(acks, f'W{i}')) > 200
                               for i in range(WRITERS)),
                   timeout=TIMEOUT * 3, what='every writer to make a few dozen drops')
        for pid in writers:     # alive (WNOWAIT: not reaped, its pid stays ours)
            assert os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None, \
                f'writer {pid} ended: see its traceback on stderr'
        _cut_power(fs, m, writers, crash_image)
        acked = set()
        for i in range(WRITERS):
            with open(os.path.join(acks, f'W{i}')) as f:
                acked |= {line for line in f.read().split('\n') if line}
    finally:
        # The daemon first: a writer waiting for a request the daemon has
        # read cannot die before the daemon answers or is gone.
        if m.run and m.run.proc.poll() is None:
            m.crash()                   # SIGKILL: a frozen process dies too
        for pid in writers:
            os.kill(pid, signal.SIGKILL)
        _, problems = reap_all(writers, mnt=m.mnt)
    assert not problems, problems
    m.unmount()

    if xfs:
        # The mount replays the log; the image's own still is mounted.
        after = loop_fs(image=crash_image, options=('nouuid',), fstype='xfs')
    else:
        _boot(crash_image)
        after = loop_fs(image=crash_image)
    m2 = after.uses(mount_inboxfs(after.inbox))      # recovers the dead instance's area
    m2.allow_log(r'recovery|quarantine')
    delivered = inbox_files(m2)
    ids = collections.Counter(message_id(data) for data in delivered.values())
    lost = acked - set(ids)
    print(f'\n{case}: {len(acked)} acknowledged before the cut, {len(delivered)} '
          f'in the inbox after it, {len(lost)} acknowledged and lost, '
          f'{len(incomplete(after.inbox))} set aside')
    if case in LOSES:
        assert lost, f'{case} lost nothing: the copy is not what the disk held'
        return
    assert not lost, f'acknowledged, then lost in the power cut: {sorted(lost)[:10]}'
    partial = [name for name, data in delivered.items() if message_id(data) is None]
    assert not partial, f'partial or corrupt files in the inbox: {partial[:10]}'
    twice = [ident for ident, n in ids.items() if n > 1]
    assert not twice, f'delivered more than once: {twice[:10]}'
    aside = {message_id(data) for data in incomplete(after.inbox).values()} - {None}
    assert not aside & set(ids), f'both delivered and set aside: {aside & set(ids)}'
