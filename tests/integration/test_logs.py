"""Logs an administrator can use (R10): in the foreground
every line has a timestamp and a syslog level, or journald's "<N>" prefix
when stderr is the journal's stream (JOURNAL_STREAM); one line at start and
one at exit; SIGTERM is a clean stop that says so, SIGHUP is logged and
does not stop the daemon."""

import os
import re
import signal

import pytest

from helpers import TIMEOUT, create_excl, inbox_contents, mountinfo, wait_until

STAMPED = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z inboxfs\[(\d+)\] '
                     r'(emerg|alert|crit|err|warning|notice|info|debug): \S')
JOURNAL = re.compile(r'^<([0-7])>\S')


def _lines(mount):
    return [line for line in mount.log().splitlines() if line.strip()]


def _collide(mount, client):
    """Two drops of one name: the second is rewritten (an info line)."""
    for data in (b'first', b'second'):
        client.call(create_excl, os.path.join(mount.mnt, 'MSG.SVF'), data)
    assert len(inbox_contents(mount.inbox)) == 2


def test_foreground_lines_have_a_timestamp_and_a_level(mounted, client):
    _collide(mounted, client)
    lines = _lines(mounted)
    assert lines, 'the daemon logged nothing'
    for line in lines:
        m = STAMPED.match(line)
        assert m, f'no timestamp and level: {line!r}'
        assert int(m.group(1)) == mounted.pid
    start = [l for l in lines if ' serving ' in l]
    assert len(start) == 1 and ' notice: inboxfs ' in start[0], lines
    assert any(' info: rewrite: "MSG.SVF" stored as ' in l for l in lines), lines


def test_journal_stream_lines_have_priority_prefixes(mount_inboxfs, client, monkeypatch):
    """systemd sets JOURNAL_STREAM=DEV:INODE for a unit whose stderr is the
    journal; journald reads '<N>' as the line's priority."""
    mount = mount_inboxfs()
    mount.unmount()
    # The next run's log file, created now so that its inode is known
    # (Mount.start truncates it in place).
    log_path = os.path.join(mount.base, f'inboxfs-{len(mount.runs) + 1}.log')
    open(log_path, 'wb').close()
    st = os.stat(log_path)
    monkeypatch.setenv('JOURNAL_STREAM', f'{st.st_dev}:{st.st_ino}')
    mount.start()
    _collide(mount, client)

    lines = _lines(mount)
    for line in lines:
        assert JOURNAL.match(line), f'no <N> prefix: {line!r}'
    assert any(l.startswith('<5>inboxfs ') and ' serving ' in l for l in lines), lines
    assert any(l.startswith('<6>rewrite: "MSG.SVF"') for l in lines), lines


def test_journal_stream_of_another_file_is_not_the_journal(mount_inboxfs, monkeypatch):
    """A JOURNAL_STREAM inherited by a daemon whose stderr went elsewhere
    (a shell started from a unit) names another file: plain lines."""
    monkeypatch.setenv('JOURNAL_STREAM', '1:2')
    mount = mount_inboxfs()
    assert all(STAMPED.match(l) for l in _lines(mount)), _lines(mount)


def test_sigterm_is_a_clean_stop_that_says_so(mount_inboxfs):
    mount = mount_inboxfs()
    mount.run.proc.send_signal(signal.SIGTERM)
    assert mount.run.proc.wait(timeout=TIMEOUT) == 0
    wait_until(lambda: not mountinfo(mount.mnt), what='the mount to go')
    lines = _lines(mount)
    assert any(l.endswith('notice: stopping on SIGTERM') for l in lines), lines
    assert lines[-1].endswith('notice: exiting with status 0'), lines


def test_unmount_is_logged_as_the_reason_to_stop(mounted):
    mounted.unmount()
    lines = _lines(mounted)
    assert any(f'stopping: {mounted.mnt} was unmounted' in l for l in lines), lines
    assert lines[-1].endswith('exiting with status 0'), lines


def test_sighup_is_logged_and_does_not_stop_the_daemon(mounted, client):
    mounted.run.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'SIGHUP ignored' in mounted.log(), what='the SIGHUP log line')
    assert mounted.run.proc.poll() is None, 'SIGHUP stopped the daemon'
    assert mounted.mounted()
    client.call(create_excl, os.path.join(mounted.mnt, 'AFTER.HUP'), b'still serving')
    assert inbox_contents(mounted.inbox) == {'AFTER.HUP': b'still serving'}


@pytest.mark.parametrize('sig', [signal.SIGINT])
def test_sigint_is_a_clean_stop_too(mount_inboxfs, sig):
    mount = mount_inboxfs()
    mount.run.proc.send_signal(sig)
    assert mount.run.proc.wait(timeout=TIMEOUT) == 0
    assert any(l.endswith('stopping on SIGINT') for l in _lines(mount))


def test_start_logs_the_options_in_force(mount_inboxfs):
    """The start names every option of inboxfs's own in force, the
    defaults included, so a defaults file the unit never read (a per-inbox
    file under an unescaped name) shows in the journal."""
    mount = mount_inboxfs(sync='none', max_drops='7')
    lines = _lines(mount)
    start = [i for i, l in enumerate(lines) if ' serving ' in l]
    assert len(start) == 1, lines
    options = [l for l in lines if ' notice: options in force: ' in l]
    assert len(options) == 1, lines
    assert options[0].split(' notice: options in force: ', 1)[1] == (
        f'observers=root,staging={mount.inbox}/.inboxfs,sync=none,datasync=auto,names=default,'
        'linger=0,max_drops=7,client_mkdir=no,xattr=yes'), options
