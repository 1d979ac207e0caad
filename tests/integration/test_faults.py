"""Faults (R4, R5, R6): nothing acknowledged is lost
and nothing partial is delivered when the daemon is killed again and again
under a storm of writers, or when the disk fills. Everything is checked in
the BACKING inbox, by content: every message carries its id, its length
and the sha256 of its body (helpers/messages.py).

One drop's durability and writers that die mid-copy are in
test_durability.py; hostile input (R8, R9, R11, R12) is in test_hostile.py."""

import collections
import errno
import os
import random
import re
import tempfile
import time

import pytest

import helpers
from helpers import (CLIENT_UID, TIMEOUT, assert_quarantine_accounted, claimed_id,
                     drop_privileges, inbox_files, message, message_id, read_file, reap_all,
                     staged, storm_writer, wait_until, write_all)


# ------------------------------------------- (1) crash storm, R4 R5 R6

STORM_NAMES = [f'{c}{n:04d}' for c in 'KQZ' for n in range(7)]   # clock-seeded clients collide


def _storm_drops(index, seed):
    """What writer INDEX drops: legacy messages of three sizes under the
    names clock-seeded clients collide on, a quarter in a subdirectory, and
    a tenth empty (an empty message says who it is by its unique name: its
    acknowledgement is the a.* rename, its publication the RELEASE)."""
    rng = random.Random(seed)
    seq = 0
    while True:
        seq += 1
        ident = f'w{index:02d}-{seq:06d}'
        size = rng.choice((rng.randrange(1, 4096), rng.randrange(4096, 65536),
                           rng.randrange(65536, 262144)))
        sub = 'sub' if rng.random() < 0.25 else ''
        if rng.random() < 0.1:
            data, name = b'', f'E{ident}.SVF'
        else:
            data, name = message(ident, size, rng), rng.choice(STORM_NAMES) + '.SVF'
        yield ident, os.path.join(sub, name), data, rng.choice((4096, 65536, 131072))


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
                    storm_writer(mount.mnt, ack_fd, _storm_drops(i, seed * 1000 + i),
                                 stat_fd, stop_r, deadline)
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
            wedge = mount.crash(timeout=5, wedged_ok=True)
            if wedge:
                wedges.append(wedge)
            time.sleep(rng.uniform(0, 0.2))      # writers meet the stale mount
            startups.append(mount.recover(TIMEOUT * 3))
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


# --------------------------------------------------------- (4) ENOSPC, R11

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


def test_full_disk(loop_fs, mount_inboxfs):
    """The inbox's filesystem fills: each client gets ENOSPC at open, write
    or close; nothing partial is ever published; once space is freed new
    drops succeed; every acknowledged drop is intact."""
    small = loop_fs(8)
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
    # Every drop that failed at a write or a close is an error inboxfs
    # met, counted once (a failed write fails the drop; a failed close is
    # a failed sync or publication).
    failed_drops = sum(1 for stage, _, _ in failures if stage in ('write', 'close'))
    assert helpers.read_stats(m.mnt)['errors'] >= failed_drops, (failures,
                                                                helpers.read_stats(m.mnt))

    # Space returns (the consumer deletes what it processed): drops succeed.
    os.unlink(ballast)
    after = helpers.run_together([(CLIENT_UID + i, _drops, (m.mnt, i, 3))
                                  for i in range(clients)], timeout=TIMEOUT * 12)
    check_inbox_complete(m, acked + [i for a in after for i in a])
    wait_until(lambda: staged(m.inbox, acked=True) == [], what='staging to empty')
    assert_quarantine_accounted(m)
    stages = collections.Counter(f[0] for f in failures)
    print(f'\nfull disk: {len(acked)} acknowledged before, ENOSPC at {dict(stages)}')
