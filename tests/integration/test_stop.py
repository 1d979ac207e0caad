"""A stop that drains (R6, README "Upgrading"): on SIGTERM
(systemctl stop, restart, every upgrade) or SIGINT the daemon keeps
serving for up to drain= seconds (default 10) while drops are open, so that
writers that close meanwhile are delivered as always; then, or as soon as
no drop is open, it unmounts and exits 0. What is still open then goes to
incomplete/ (its writer's write or close fails), as with drain=0, the old
immediate stop. A second stop signal during the drain stops at once. New
creates during the drain are served. Everything is checked in the backing
inbox, by content, through the real daemon."""

import errno
import os
import signal
import time

import pytest

from helpers import (OTHER_UID, TIMEOUT, incomplete, inbox_contents, mountinfo, process_group,
                     wait_until)


def _open_drop(client, mount, name, first):
    """A client session holding NAME open (create-new), FIRST written."""
    s = client.session()
    fd = s.open(os.path.join(mount.mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    s.write(fd, first)
    return s, fd


def _stopping(mount, what='the daemon to start its stop'):
    """After a stop signal: wait until the daemon says it drains, or exits."""
    wait_until(lambda: 'draining on SIG' in mount.log() or mount.run.proc.poll() is not None,
               what=what)


def _stopped(mount, timeout=TIMEOUT * 3):
    """Wait for the daemon's exit; how long it took."""
    start = time.monotonic()
    assert mount.run.proc.wait(timeout=timeout) == 0, mount.log()
    return time.monotonic() - start


def _errno_of_finish(s, fd, rest):
    """Write REST and close FD in session S: 0, or the errno it failed with."""
    try:
        s.write(fd, rest)
    except OSError as e:
        try:
            s.close(fd)
        except OSError:
            pass
        return e.errno
    try:
        s.close(fd)
    except OSError as e:
        return e.errno
    return 0


@pytest.mark.parametrize('args', [(), ('-s',)], ids=['multithreaded', 'single-threaded'])
def test_drop_closed_during_the_drain_is_delivered(mount_inboxfs, client, args):
    """The writer holding a drop at SIGTERM writes the rest and closes:
    its close succeeds and the drop is in the inbox once, whole."""
    mount = mount_inboxfs(args=args)
    s, fd = _open_drop(client, mount, 'HELD.SVF', b'first half, ')
    mount.run.proc.send_signal(signal.SIGTERM)
    _stopping(mount)
    assert _errno_of_finish(s, fd, b'second half') == 0, mount.log()
    _stopped(mount)
    assert inbox_contents(mount.inbox) == {'HELD.SVF': b'first half, second half'}
    assert incomplete(mount.inbox) == {}
    log = mount.log()
    assert 'notice: draining on SIGTERM: 1 drops open, up to 10 s' in log, log
    assert 'drained: no drop open' in log, log
    assert log.splitlines()[-1].endswith('exiting with status 0'), log


def test_drop_still_open_at_the_deadline_goes_to_incomplete(mount_inboxfs, client):
    """drain=1: a writer that does not close in time loses its drop, and
    knows it (its write or close fails); nothing reaches the inbox."""
    mount = mount_inboxfs(drain=1)
    s, fd = _open_drop(client, mount, 'LATE.SVF', b'never finished')
    sent = time.monotonic()
    mount.run.proc.send_signal(signal.SIGTERM)
    _stopped(mount)
    assert time.monotonic() - sent >= 1.0, 'the daemon did not wait for the drain'
    assert _errno_of_finish(s, fd, b' and more') in (errno.ENOTCONN, errno.EIO)
    s.end()
    assert inbox_contents(mount.inbox) == {}
    assert list(incomplete(mount.inbox).values()) == [b'never finished']
    log = mount.log()
    assert 'draining on SIGTERM: 1 drops open, up to 1 s' in log, log
    assert 'drain over: 1 drops still open go to incomplete/' in log, log


def test_sigterm_with_no_drop_open_stops_at_once(mount_inboxfs, client):
    """Nothing to wait for: the stop does not wait for drain= (60 here)."""
    mount = mount_inboxfs(drain=60)
    client.call(lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)),
                os.path.join(mount.mnt, 'DONE.SVF'))
    mount.run.proc.send_signal(signal.SIGTERM)
    took = _stopped(mount, timeout=50)
    assert took < 50
    assert 'draining' not in mount.log()
    assert 'notice: stopping on SIGTERM' in mount.log()
    assert inbox_contents(mount.inbox) == {'DONE.SVF': b''}


def test_drain_0_is_the_immediate_stop(mount_inboxfs, client):
    mount = mount_inboxfs(drain=0)
    s, fd = _open_drop(client, mount, 'CUT.SVF', b'cut short')
    mount.run.proc.send_signal(signal.SIGTERM)
    _stopped(mount, timeout=TIMEOUT)
    assert _errno_of_finish(s, fd, b'!') in (errno.ENOTCONN, errno.EIO)
    s.end()
    assert 'draining' not in mount.log()
    assert inbox_contents(mount.inbox) == {}
    assert list(incomplete(mount.inbox).values()) == [b'cut short']


@pytest.mark.parametrize('second', [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_the_drain_stops_at_once(mount_inboxfs, client, second):
    mount = mount_inboxfs(drain=60)
    s, fd = _open_drop(client, mount, 'ABORT.SVF', b'abandoned')
    mount.run.proc.send_signal(signal.SIGTERM)
    _stopping(mount)
    assert mount.run.proc.poll() is None, 'stopped without draining'
    mount.run.proc.send_signal(second)
    assert _stopped(mount, timeout=50) < 50
    assert _errno_of_finish(s, fd, b'!') in (errno.ENOTCONN, errno.EIO)
    s.end()
    assert inbox_contents(mount.inbox) == {}
    assert list(incomplete(mount.inbox).values()) == [b'abandoned']
    name = signal.Signals(second).name
    assert f'{name} during the drain: stopping now, 1 drops open go to incomplete/' \
        in mount.log(), mount.log()


def test_creates_during_the_drain_are_served(mount_inboxfs, as_client):
    """A legacy client whose create failed would discard its message: a
    drop created during the drain is served like any other, and delivered
    if it is closed before the deadline."""
    mount = mount_inboxfs(drain=60)
    writer = as_client()
    s, fd = _open_drop(writer, mount, 'HELD.SVF', b'held')
    mount.run.proc.send_signal(signal.SIGTERM)
    _stopping(mount)
    other = as_client(OTHER_UID)
    other.call(lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)),
               os.path.join(mount.mnt, 'NEW.SVF'))
    assert mount.run.proc.poll() is None
    assert _errno_of_finish(s, fd, b' on') == 0
    assert _stopped(mount, timeout=50) < 50
    assert inbox_contents(mount.inbox) == {'HELD.SVF': b'held on', 'NEW.SVF': b''}


def test_sigint_drains_too(mount_inboxfs, client):
    mount = mount_inboxfs()
    s, fd = _open_drop(client, mount, 'INT.SVF', b'ctrl-')
    mount.run.proc.send_signal(signal.SIGINT)
    _stopping(mount)
    assert _errno_of_finish(s, fd, b'c') == 0, mount.log()
    _stopped(mount)
    assert inbox_contents(mount.inbox) == {'INT.SVF': b'ctrl-c'}
    assert 'draining on SIGINT: 1 drops open' in mount.log()


def test_smb_drop_closed_during_the_drain_is_delivered(mounted, samba):
    """Through real Samba: a FILE_CREATE handle held open across the
    daemon's SIGTERM, then written to the end and closed: the close
    succeeds and the message is delivered once, whole."""
    from impacket import smb3structs as s3
    from helpers import STATUS_SUCCESS
    server = samba(mounted.mnt)
    conn = server.connect()
    part, rest = b'x' * 100_000, b'y' * 50_000
    status, fid = conn.create('SMBHELD.SVF', s3.FILE_CREATE, data=part, close=False)
    assert status == STATUS_SUCCESS
    mounted.run.proc.send_signal(signal.SIGTERM)
    _stopping(mounted)
    conn.conn.writeFile(conn.tid, fid, rest, offset=len(part))
    conn.close(fid)
    _stopped(mounted)
    assert inbox_contents(mounted.inbox) == {'SMBHELD.SVF': part + rest}
    assert incomplete(mounted.inbox) == {}
    assert 'draining on SIGTERM: 1 drops open' in mounted.log()



def _stop_smbd_as_systemd(server):
    """systemctl stop smbd: SIGTERM to every process of its group (our smbd
    runs in a group of its own), then wait for all of them. Its
    connections are gone with it."""
    pgid = server.proc.pid
    os.killpg(pgid, signal.SIGTERM)
    wait_until(lambda: not process_group(pgid), what='smbd and its children to exit')
    server.proc.wait(timeout=TIMEOUT)
    server.proc = None
    for conn in server.connections:
        conn.conn = None           # its socket died with smbd
    server.connections = []


def test_smbd_stopped_first_leaves_nothing_to_drain(mounted, samba):
    """README, Upgrading: with smbd bound to the instance, systemctl restart
    stops smbd first. Its connection's open drop is a dead writer's and goes
    to incomplete/ at once; the daemon's SIGTERM then finds nothing open and
    stops without waiting."""
    from impacket import smb3structs as s3
    from helpers import STATUS_SUCCESS
    server = samba(mounted.mnt)
    conn = server.connect()
    part = b'z' * 10_000
    status, _fid = conn.create('CUT.SVF', s3.FILE_CREATE, data=part, close=False)
    assert status == STATUS_SUCCESS
    _stop_smbd_as_systemd(server)
    wait_until(lambda: incomplete(mounted.inbox), what='the drop in incomplete/')
    mounted.run.proc.send_signal(signal.SIGTERM)
    assert _stopped(mounted, timeout=50) < 50
    assert 'draining' not in mounted.log()
    assert inbox_contents(mounted.inbox) == {}
    assert list(incomplete(mounted.inbox).values()) == [part]

def test_lingering_drop_is_delivered_at_the_stop_without_a_drain(mount_inboxfs, client):
    """linger=: a closed drop waiting for its time is acknowledged, not
    open: the stop does not wait for it and publishes it as before."""
    mount = mount_inboxfs(linger=600, drain=60)
    s, fd = _open_drop(client, mount, 'LINGER.SVF', b'closed, lingering')
    s.close(fd)
    assert inbox_contents(mount.inbox) == {}
    mount.run.proc.send_signal(signal.SIGTERM)
    assert _stopped(mount, timeout=50) < 50
    s.end()
    assert 'draining' not in mount.log()
    assert inbox_contents(mount.inbox) == {'LINGER.SVF': b'closed, lingering'}
    assert incomplete(mount.inbox) == {}


@pytest.mark.parametrize('value', ['3601', '-1', '10s', ''])
def test_bad_drain_is_refused_before_mounting(run_inboxfs, tmp_path, value):
    inbox, mnt = tmp_path / 'inbox', tmp_path / 'mnt'
    inbox.mkdir()
    mnt.mkdir()
    proc = run_inboxfs('-f', '-o', f'drain={value}', inbox, mnt)
    assert proc.returncode != 0
    assert f'drain={value}: expected whole seconds, 0 to 3600' in proc.stderr, proc.stderr
    assert not mountinfo(str(mnt))


def test_area_lost_during_the_drain_stops_at_once(mount_inboxfs, client):
    """A SIGTERM drain under way (drain=60, a drop held open) when the
    instance's staging area stops being its own (its lock file replaced,
    as another instance's take-over would find it): it stops at once, with
    exit status 1, without waiting for the drain; the held drop is not
    delivered and its writer learns it (its write or close fails)."""
    mount = mount_inboxfs(drain=60)
    run = mount.run
    run.expected_status = 1
    mount.allow_log(r'no longer this instance')
    s, fd = _open_drop(client, mount, 'HELD.SVF', b'never finished')
    run.proc.send_signal(signal.SIGTERM)
    _stopping(mount)
    area = [e.path for e in os.scandir(os.path.join(mount.inbox, '.inboxfs'))
            if e.is_dir() and e.name != 'incomplete']
    assert len(area) == 1, area
    lost = time.monotonic()
    os.unlink(os.path.join(area[0], 'lock'))
    open(os.path.join(area[0], 'lock'), 'x').close()
    assert run.proc.wait(timeout=TIMEOUT * 3) == 1, mount.log()
    assert time.monotonic() - lost < 30, 'the daemon waited for the drain'
    assert _errno_of_finish(s, fd, b' and more') in (errno.ENOTCONN, errno.EIO)
    s.end()
    assert inbox_contents(mount.inbox) == {}
    log = mount.log()
    assert 'is no longer this instance\'s' in log, log
    assert log.splitlines()[-1].endswith('exiting with status 1'), log
