"""Races on one session's drops (core/drop.h's lock and references): threads
of one process create, write, duplicate, rename, unlink and close the same
few names at once, children inherit descriptors, with linger 0 and > 0,
while another client storms. Every close that succeeded is delivered
exactly once, nothing else is. tools/test also runs this file against the
ThreadSanitizer build, where any report fails it."""

import errno
import os
import random
import subprocess
import threading
import time

import pytest

import helpers
from helpers import inbox_contents, wait_until

NAMES = ['R1.SVF', 'R2.SVF', 'R3.SVF']
THREADS = 6
SECONDS = 3.0


def _racer(mnt, tag, seed, until):
    """One thread's loop; returns [(payload, 'closed' | 'unlinked' | errno)]."""
    rnd = random.Random(seed)
    outcomes = []
    n = 0
    while time.monotonic() < until:
        n += 1
        payload = f'{tag}-{n}-'.encode() + os.urandom(8).hex().encode()
        path = os.path.join(mnt, rnd.choice(NAMES))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOENT):
                raise
            continue
        unlinked = False
        try:
            os.write(fd, payload[:5])
            action = rnd.random()
            if action < 0.2:
                fd2 = os.dup(fd)
                os.close(fd)
                fd = fd2
            elif action < 0.4:
                try:
                    os.rename(path, os.path.join(mnt, rnd.choice(NAMES)))
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOENT):
                        raise
            elif action < 0.5:
                try:
                    os.unlink(path)
                    unlinked = True
                except FileNotFoundError:
                    pass    # renamed by ourselves? never: only this thread has it
            elif action < 0.6:
                pid = os.fork()
                if pid == 0:
                    os._exit(0)           # a child closes its inherited copy
                os.waitpid(pid, 0)
            os.write(fd, payload[5:])
        except OSError as e:
            outcomes.append((payload, e.errno))
            try:
                os.close(fd)
            except OSError:
                pass
            continue
        try:
            os.close(fd)
            outcomes.append((payload, 'unlinked' if unlinked else 'closed'))
        except OSError as e:
            outcomes.append((payload, e.errno))
    return outcomes


def _race(mnt, seconds):
    until = time.monotonic() + seconds
    results = [None] * THREADS
    errors = []

    def run(i):
        try:
            results[i] = _racer(mnt, f'T{i}', i, until)
        except BaseException as e:  # noqa: B902 - reported to the test
            errors.append(repr(e))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(errors)
    return [o for r in results for o in r]


def _storm(mnt, seconds):
    """Another client's create-new drops under the racers' names (its own
    lingering name refuses a create-new, as on a plain directory)."""
    until = time.monotonic() + seconds
    sent = []
    n = 0
    while time.monotonic() < until:
        n += 1
        payload = b'S' + os.urandom(12).hex().encode()
        try:
            helpers.create_excl(os.path.join(mnt, NAMES[n % len(NAMES)]), payload)
        except FileExistsError:
            continue
        sent.append(payload)
    return sent


@pytest.mark.parametrize('linger', [0, 1])
def test_one_session_races_its_own_drops(mount_inboxfs, client, as_client, linger):
    m = mount_inboxfs(linger=linger)
    stormer = as_client(60002)
    storm = stormer.popen(['/usr/bin/python3', '-c', (
        'import os, sys, time\n'
        'sys.path.insert(0, %r)\n'
        'import test_concurrency as t\n'
        'print(len(t._storm(%r, %r)))\n') % (os.path.dirname(__file__), m.mnt, SECONDS)],
        stdout=subprocess.PIPE)
    try:
        outcomes = client.call(_race, m.mnt, SECONDS, timeout=SECONDS * 20)
    finally:
        out, _ = storm.communicate(timeout=SECONDS * 20)
    assert storm.returncode == 0
    stormed = int(out)
    closed = [p for p, o in outcomes if o == 'closed']
    failed = [(p, o) for p, o in outcomes if o not in ('closed', 'unlinked')]
    assert closed, outcomes[:10]
    # linger: the last drops are published when their time is up.
    wait_until(lambda: len(inbox_contents(m.inbox)) >= len(closed) + stormed,
               timeout=helpers.TIMEOUT + linger * 2, what='every drop delivered')
    delivered = sorted(inbox_contents(m.inbox).values())
    races = sorted(d for d in delivered if d[:1] == b'T')
    assert races == sorted(closed), (len(races), len(closed), failed[:5])
    assert len(delivered) - len(races) == stormed
    assert not failed, failed[:5]
