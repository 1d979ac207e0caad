"""Several inboxfs instances over one inbox (R6; README "Several front-ends"):
each owns a staging area locked while it runs; a start-up recovers only the
areas of instances that are gone, never a live one's. Two mounts of one inbox
on this machine (ext4 or tmpfs): the cluster-filesystem case is
test_gluster.py."""

import os
import re
import signal
import subprocess
import time

import helpers
from helpers import (TIMEOUT, create_excl, inbox_contents, incomplete, read_stats, staged,
                     wait_until)

OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def test_second_instance_leaves_an_open_drop_of_the_first_alone(mount_inboxfs, client):
    """R6 across instances: instance 1 holds an open drop, instance 2 starts
    over the same inbox. Its recovery must not take the drop (on aee336c it
    moved it to incomplete/ and the writer's close failed with ENOENT):
    the drop is published by its own instance, the close succeeds, and both
    instances serve."""
    first = mount_inboxfs()
    s = client.session()
    fd = s.open(os.path.join(first.mnt, 'x.svf'), OPEN, 0o644)
    s.write(fd, b'A-part1')

    second = mount_inboxfs(first.inbox)
    s.write(fd, b' A-part2')
    s.close(fd)

    assert inbox_contents(first.inbox) == {'x.svf': b'A-part1 A-part2'}
    assert incomplete(first.inbox) == {}
    assert 'quarantined' not in second.log(), second.log()
    # Both serve, and a drop of the same name through the second is kept too.
    client.call(create_excl, os.path.join(second.mnt, 'x.svf'), b'B')
    client.call(create_excl, os.path.join(first.mnt, 'y.svf'), b'C')
    found = inbox_contents(first.inbox)
    assert sorted(found.values()) == [b'A-part1 A-part2', b'B', b'C'], found
    assert found['y.svf'] == b'C'
    assert staged(first.inbox, acked=True) == []


def _closed_lingering(client, mount, name, data):
    """A drop closed through MOUNT (mounted with linger=) and acknowledged,
    not yet published: staged as a.*."""
    before = set(staged(mount.inbox, acked=True))
    client.call(create_excl, os.path.join(mount.mnt, name), data)
    [new] = set(staged(mount.inbox, acked=True)) - before
    assert os.path.basename(new).startswith('a.'), new
    return new


def test_restart_recovers_a_dead_instance_and_leaves_a_live_one_alone(mount_inboxfs,
                                                                      client):
    """R6 with two instances: instance 1 is killed (-9) with an acknowledged
    drop (a lingering one) and an open one in its area while instance 2 serves
    an open drop of its own. Instance 1's restart (or instance 2, which takes
    a dead area over while it runs, whichever locks it first) delivers the
    acknowledged drop once and quarantines the open one; instance 2's drop is
    untouched and its close succeeds."""
    first = mount_inboxfs(linger=60)
    second = mount_inboxfs(first.inbox)
    _closed_lingering(client, first, 'ACKED.SVF', b'acknowledged by instance 1')
    s1, s2 = client.session(), client.session()
    fd1 = s1.open(os.path.join(first.mnt, 'OPEN.SVF'), OPEN, 0o644)
    s1.write(fd1, b'never closed')
    fd2 = s2.open(os.path.join(second.mnt, 'LIVE.SVF'), OPEN, 0o644)
    s2.write(fd2, b'instance 2, ')

    first.crash()
    s1.end()
    first.recover()

    wait_until(lambda: 'ACKED.SVF' in inbox_contents(first.inbox) and incomplete(first.inbox),
               timeout=TIMEOUT * 3, what='the dead instance\'s area recovered')
    assert inbox_contents(first.inbox) == {'ACKED.SVF': b'acknowledged by instance 1'}
    assert list(incomplete(first.inbox).values()) == [b'never closed']
    log = first.log()
    assert 'belongs to a live instance: left alone' in log, log
    taken = [m.log().count('of an instance that is gone') for m in (first, second)]
    assert sorted(taken) == [0, 1], taken
    s2.write(fd2, b'still open')
    s2.close(fd2)
    assert inbox_contents(first.inbox) == {'ACKED.SVF': b'acknowledged by instance 1',
                                           'LIVE.SVF': b'instance 2, still open'}
    assert staged(first.inbox, acked=True) == []


def test_running_instance_takes_over_a_dead_ones_area(mount_inboxfs, client):
    """R6's recovery of a dead peer: an instance killed (-9) with acknowledged
    (lingering) drops and an open one, and never started again. The other
    instance, left running, takes its area over within seconds: each
    acknowledged drop delivered once, the open one quarantined, the area gone,
    counted; the survivor's own open drop (a live area) is untouched and its
    close succeeds. On f37f33b nothing was delivered until an instance started
    (the wait below timed out)."""
    dead = mount_inboxfs(linger=60)
    survivor = mount_inboxfs(dead.inbox)
    want = {f'ACK{i:02d}.SVF': f'acknowledged {i}'.encode() for i in range(10)}
    for name, data in want.items():
        _closed_lingering(client, dead, name, data)
    s_dead, s_live = client.session(), client.session()
    fd_dead = s_dead.open(os.path.join(dead.mnt, 'OPEN.SVF'), OPEN, 0o644)
    s_dead.write(fd_dead, b'never closed')
    fd_live = s_live.open(os.path.join(survivor.mnt, 'LIVE.SVF'), OPEN, 0o644)
    s_live.write(fd_live, b'survivor, ')
    assert inbox_contents(dead.inbox) == {}

    dead.crash()
    killed = time.monotonic()
    s_dead.end()
    wait_until(lambda: len(inbox_contents(dead.inbox)) >= len(want), timeout=TIMEOUT * 3,
               interval=0.1, what='the dead instance\'s acknowledged drops')
    took = time.monotonic() - killed
    wait_until(lambda: incomplete(dead.inbox), timeout=TIMEOUT * 3, interval=0.1,
               what='the dead instance\'s open drop quarantined')

    assert inbox_contents(dead.inbox) == want, took
    assert list(incomplete(dead.inbox).values()) == [b'never closed']
    log = survivor.log()
    assert log.count('of an instance that is gone, taken over while serving') == 1, log
    assert log.count('recovery: published') == len(want), log
    stats = read_stats(survivor.mnt)
    assert stats['recoveries.areas'] == 1, stats
    assert stats['recoveries'] == len(want) + 1, stats
    # Only the survivor's own area is left, and its open drop is its own.
    areas = [e for e in os.listdir(os.path.join(dead.inbox, '.inboxfs'))
             if e not in ('incomplete', 'names', 'lock')]
    assert len(areas) == 1, areas
    s_live.write(fd_live, b'still open')
    s_live.close(fd_live)
    assert inbox_contents(dead.inbox) == {**want, 'LIVE.SVF': b'survivor, still open'}
    assert staged(dead.inbox, acked=True) == []


def test_crash_between_link_and_unlink_is_repaired_without_duplicate(mount_inboxfs, client):
    """R6, exactly once: where the filesystem lacks RENAME_NOREPLACE a drop is
    published by link() then unlink() of its staged name. An instance killed
    between the two leaves the message in the inbox and its staged name
    behind, with two links: the next start removes the staged name and
    delivers nothing twice (on aee336c it published it again under a unique
    name)."""
    m = mount_inboxfs(linger=60)
    stage = _closed_lingering(client, m, 'LINKED.SVF', b'published once')
    m.crash()
    staged_path = os.path.join(m.inbox, '.inboxfs', stage)
    os.link(staged_path, os.path.join(m.inbox, 'LINKED.SVF'))    # the link() of it

    m.recover()

    assert inbox_contents(m.inbox) == {'LINKED.SVF': b'published once'}
    assert os.stat(os.path.join(m.inbox, 'LINKED.SVF')).st_nlink == 1
    assert incomplete(m.inbox) == {}
    assert staged(m.inbox, acked=True) == []


def test_two_instances_recovering_one_dead_area_deliver_each_drop_once(mount_inboxfs,
                                                                      client):
    """Two instances starting at once over an inbox whose staging holds a
    dead instance's acknowledged drops: one takes the area's lock and
    delivers them, the other leaves it; each drop arrives once."""
    dead = mount_inboxfs(linger=60)
    want = {f'M{i:03d}.SVF': f'message {i}'.encode() for i in range(40)}
    for name, data in want.items():
        _closed_lingering(client, dead, name, data)
    dead.crash()

    a = mount_inboxfs(dead.inbox, wait=False)
    b = mount_inboxfs(dead.inbox, wait=False)
    a.wait_mounted()
    b.wait_mounted()

    assert inbox_contents(dead.inbox) == want
    assert incomplete(dead.inbox) == {} and staged(dead.inbox, acked=True) == []
    published = [len(re.findall(r'recovery: published', m.log())) for m in (a, b)]
    assert sorted(published) == [0, 40], published


def test_instance_whose_area_is_lost_publishes_nothing_from_it(mount_inboxfs, client):
    """An instance whose area is no longer its own (its lock lost, as on a
    cluster filesystem that dropped it during a partition: here its lock
    file replaced, which it tells the same way) stops with status 1, and
    what it acknowledged is whoever takes the area over's to deliver:
    published by both it would arrive twice (by link() and unlink(), as on
    GlusterFS, two renames do not exclude each other). So the stopping
    instance publishes nothing from it, not even its lingering drops at
    the unmount: the next instance over the inbox delivers each once."""
    m = mount_inboxfs(linger=60)
    stage = _closed_lingering(client, m, 'LOST.SVF', b'acknowledged, lingering')
    area = os.path.join(m.inbox, '.inboxfs', os.path.dirname(stage))
    run = m.run
    run.expected_status = 1
    m.allow_log(r'no longer this instance|publishing "LOST.SVF"')
    os.unlink(os.path.join(area, 'lock'))
    open(os.path.join(area, 'lock'), 'x').close()     # as another instance's
    run.proc.wait(timeout=TIMEOUT * 3)
    assert run.proc.returncode == 1, run.log()
    assert 'is no longer this instance\'s' in run.log(), run.log()

    assert inbox_contents(m.inbox) == {}, 'published from an area no longer its own'
    assert staged(m.inbox, acked=True) == [stage]
    m.start()                                            # takes the area over
    assert inbox_contents(m.inbox) == {'LOST.SVF': b'acknowledged, lingering'}
    assert staged(m.inbox, acked=True) == [] and incomplete(m.inbox) == {}


def test_frozen_instance_is_never_taken_over(mount_inboxfs, client):
    """An instance stopped by SIGSTOP is alive: its lock stays held, so the
    other instance, running, never takes its area over, however long it is
    frozen (here three of its one-second passes). Thawed, it publishes its
    own lingering drop, once."""
    frozen = mount_inboxfs(linger=3)
    other = mount_inboxfs(frozen.inbox)
    stage = _closed_lingering(client, frozen, 'FROZEN.SVF', b'its own')
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        time.sleep(3.5)
        assert inbox_contents(frozen.inbox) == {}
        assert staged(frozen.inbox, acked=True) == [stage]
        assert 'taken over while serving' not in other.log(), other.log()
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    wait_until(lambda: inbox_contents(frozen.inbox), timeout=TIMEOUT * 3, interval=0.1,
               what='the thawed instance\'s drop')
    assert inbox_contents(frozen.inbox) == {'FROZEN.SVF': b'its own'}
    assert staged(frozen.inbox, acked=True) == [] and incomplete(frozen.inbox) == {}
    assert read_stats(other.mnt)['recoveries.areas'] == 0


def test_default_staging_of_another_instance_is_hidden_under_staging_elsewhere(
        mount_inboxfs, client, tmp_path):
    """Two instances over one inbox, one with the default staging
    (INBOX/.inboxfs), the other started with staging= elsewhere: the first
    one's staging directory, with the draft of an open drop and its
    acknowledged ones, is hidden from every view of the second too (R11),
    as its own is; a consumer reading the inbox through it would take a
    draft, or a message that is delivered again later, for one. On
    1a622bc the second instance listed .inboxfs at the top, and an observer
    could walk into it to the draft."""
    first = mount_inboxfs()
    s = client.session()
    fd = s.open(os.path.join(first.mnt, 'DRAFT.SVF'), OPEN, 0o644)
    s.write(fd, b'draft')
    staging = tmp_path / 'elsewhere'
    staging.mkdir()
    second = mount_inboxfs(first.inbox, staging=str(staging))

    assert os.listdir(second.mnt) == []
    assert not os.path.exists(os.path.join(second.mnt, '.inboxfs'))
    assert client.call(os.listdir, second.mnt) == []
    assert not client.call(os.path.exists, os.path.join(second.mnt, '.inboxfs'))
    s.close(fd)
    assert inbox_contents(first.inbox) == {'DRAFT.SVF': b'draft'}
    assert sorted(os.listdir(second.mnt)) == ['DRAFT.SVF']


# clock_gettime(CLOCK_REALTIME) an hour ahead once the file named by
# INBOXFS_CLOCK_AHEAD exists: the daemon's view of a wall clock stepped
# back by an hour (NTP correcting a clock that ran ahead, date -s) between
# its reading and the kernel's timed wait against the real one.
CLOCK_AHEAD = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int clock_gettime(clockid_t clock, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	const char *flag = getenv("INBOXFS_CLOCK_AHEAD");
	int ret;

	if (!real)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	ret = real(clock, ts);
	if (ret == 0 && clock == CLOCK_REALTIME && flag && access(flag, F_OK) == 0)
		ts->tv_sec += 3600;
	return ret;
}
'''


def test_wall_clock_stepped_back_stalls_no_periodic_thread(mount_inboxfs, client, tmp_path,
                                                          monkeypatch):
    """The periodic threads (ticker.c: the linger thread, the take-over)
    wait for their next period on the monotonic clock: a wall clock
    stepped back by an hour neither holds a lingering drop for an hour
    (linger= promises a tenth of a second) nor stops the take-over and the
    check of the instance's own area for that long. On 1a622bc their timed
    waits were against CLOCK_REALTIME: the drop was not published."""
    src, lib = tmp_path / 'clockahead.c', tmp_path / 'clockahead.so'
    flag = tmp_path / 'clock-stepped'
    src.write_text(CLOCK_AHEAD)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', f'INBOXFS_CLOCK_AHEAD={flag}',
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)
    dead = mount_inboxfs(linger=60)
    _closed_lingering(client, dead, 'DEAD.SVF', b'taken over')
    m = mount_inboxfs(dead.inbox, linger=1)
    time.sleep(0.5)                     # the threads in their timed waits
    flag.touch()
    time.sleep(1.5)                     # the waits under way end; new ones begin
    dead.crash()
    _closed_lingering(client, m, 'LINGER.SVF', b'lingered a second')
    wait_until(lambda: len(inbox_contents(m.inbox)) == 2, timeout=TIMEOUT * 2, interval=0.1,
               what='the lingering drop published and the dead area taken over')
    assert inbox_contents(m.inbox) == {'LINGER.SVF': b'lingered a second',
                                       'DEAD.SVF': b'taken over'}


def test_default_staging_made_after_a_start_with_staging_elsewhere_is_hidden(
        mount_inboxfs, client, tmp_path):
    """As above, the instance with staging= elsewhere started first: the
    other's INBOX/.inboxfs, made after its start, is hidden from its views
    within its next pass (a second): its top lists nothing, for root and
    for a client, while the other's drop is open. On 5eae6e3 it stayed
    listed."""
    staging = tmp_path / 'elsewhere'
    staging.mkdir()
    second = mount_inboxfs(staging=str(staging))
    first = mount_inboxfs(second.inbox)
    s = client.session()
    fd = s.open(os.path.join(first.mnt, 'DRAFT.SVF'), OPEN, 0o644)
    s.write(fd, b'draft')
    wait_until(lambda: client.call(os.listdir, second.mnt) == [], timeout=TIMEOUT,
               interval=0.2, what='.inboxfs hidden from a client')
    wait_until(lambda: os.listdir(second.mnt) == [], timeout=TIMEOUT, interval=0.2,
               what='.inboxfs hidden from an observer')
    s.close(fd)
    assert inbox_contents(first.inbox) == {'DRAFT.SVF': b'draft'}
    assert sorted(os.listdir(second.mnt)) == ['DRAFT.SVF']
