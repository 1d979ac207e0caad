"""The counters (R10, R2): .inboxfs-stats and tools/inboxfs-stat
(its table, --watch, Prometheus) and the rewrite log match what a storm
with collisions did; a drop deleted before its close counts as discarded;
clients can neither see nor open the stats file, observers read it but
cannot change it, and its name never reaches a shadowed backing file.

The tools/run demo is in test_deploy.py, the options in test_options.py."""

import errno
import json
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from helpers import (CLIENT_UID, SOURCE, STATS, TAG, TIMEOUT, create_excl, errno_of,
                     inbox_contents, read_stats, run_together, staged, wait_until, write_file)


STAT_TOOL = os.path.join(SOURCE, 'tools', 'inboxfs-stat')
# The counters README.md and the brief name; the file must hold them all.
COUNTERS = ('drops', 'bytes', 'publications', 'rewrites', 'discarded',
            'quarantines', 'recoveries', 'recoveries.areas', 'errors', 'sessions.alive',
            'sessions.started', 'sessions.ended', 'publish.latency.p50_us',
            'publish.latency.p90_us', 'publish.latency.p99_us', 'uptime_s')
REWRITE_LINE = re.compile(
    r'rewrite: "(?P<requested>[^"]*)" stored as "(?P<stored>[^"]*)" '
    r'\(client (?P<client>\S+), pid (?P<pid>\d+), uid (?P<uid>\d+)\)')


# ------------------------------------------------------------------ helpers

def stat_tool(*args, timeout=TIMEOUT * 3, **kw):
    """Run tools/inboxfs-stat directly (its #!/usr/bin/python3 shebang)."""
    kw.setdefault('stdin', subprocess.DEVNULL)
    kw.setdefault('capture_output', True)
    return subprocess.run([STAT_TOOL, *args], text=True, timeout=timeout, **kw)


def parse_table(text):
    """tools/inboxfs-stat's table: one 'name value' line per counter."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith('#'):
            assert len(fields) == 2 and re.fullmatch(r'\d+', fields[1]), \
                f'not a "name value" line: {line!r}'
            table[fields[0]] = int(fields[1])
    return table


# ============================================================ counters (R10)

def test_counters_and_log_after_a_storm_with_collisions(mount_inboxfs):
    """R10: 20 clients create one name at once; the virtual file,
    inboxfs-stat --json and its table agree with what they did, and the
    log has one line per rewrite naming both names."""
    m = mount_inboxfs()
    name = 'STORM001.SVF'
    path = os.path.join(m.mnt, name)
    uids = [CLIENT_UID + i for i in range(20)]
    payloads = [f'client {i} uid {uid} '.encode() + os.urandom(1000 + 97 * i)
                for i, uid in enumerate(uids)]

    pids = run_together([(uid, create_excl, (path, data))
                         for uid, data in zip(uids, payloads)])

    found = inbox_contents(m.inbox)
    assert sorted(found.values()) == sorted(payloads), sorted(found)
    assert name in found
    stored = sorted(n for n in found if n != name)
    assert all(re.fullmatch(rf'STORM001~{TAG}{{12}}\.SVF', n) for n in stored), stored

    stats = read_stats(m.mnt)
    missing = [c for c in COUNTERS if c not in stats]
    assert not missing, f'.inboxfs-stats lacks {missing}: {stats}'
    expected = {'drops': 20, 'publications': 20, 'rewrites': 19,
                'bytes': sum(map(len, payloads)), 'discarded': 0, 'quarantines': 0,
                'recoveries': 0, 'recoveries.areas': 0, 'errors': 0}
    assert {k: stats[k] for k in expected} == expected, stats
    assert stats['sessions.started'] >= 20
    assert stats['publish.latency.p50_us'] <= stats['publish.latency.p90_us'] \
        <= stats['publish.latency.p99_us']
    assert stats['publish.latency.p99_us'] > 0

    proc = stat_tool('--json', m.mnt)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    as_json = json.loads(lines[0])
    assert set(as_json) == set(stats), (sorted(as_json), sorted(stats))
    assert all(isinstance(v, int) for v in as_json.values()), as_json
    assert {k: as_json[k] for k in expected} == expected, as_json

    proc = stat_tool(m.mnt)
    assert proc.returncode == 0, proc.stderr
    table = parse_table(proc.stdout)
    assert set(table) == set(stats), proc.stdout
    assert {k: table[k] for k in expected} == expected, proc.stdout

    # The log: one line per rewrite, both names, the writer's pid and uid.
    wait_until(lambda: len(re.findall('rewrite:', m.log())) >= 19, what='19 rewrite lines')
    time.sleep(0.2)
    rewrite_lines = [l for l in m.log().splitlines() if 'rewrite:' in l]
    assert len(rewrite_lines) == 19, '\n'.join(rewrite_lines)
    uid_of = dict(zip(pids, uids))
    logged = []
    for line in rewrite_lines:
        mt = REWRITE_LINE.search(line)
        assert mt, f'not a rewrite line: {line!r}'
        assert mt['requested'] == name, line
        assert mt['stored'] in found and mt['stored'] != name, line
        assert mt['client'] == 'local', line
        assert int(mt['pid']) in uid_of, f'{line}: pid not one of the writers {pids}'
        assert uid_of[int(mt['pid'])] == int(mt['uid']), line
        logged.append(mt['stored'])
    assert sorted(logged) == stored


def _watch(args, meanwhile=lambda: None, seconds=1.0):
    """inboxfs-stat ARGS (a -w run) for SECONDS, MEANWHILE called once it
    started, then SIGINT: (exit status, stdout, stderr)."""
    proc = subprocess.Popen([STAT_TOOL, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        meanwhile()
        time.sleep(seconds - 0.3)
        assert proc.poll() is None, f'inboxfs-stat -w exited: {proc.communicate()}'
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
    return proc.returncode, out, err


def test_inboxfs_stat_watch_prints_repeatedly(mounted):
    """inboxfs-stat -w 0.2: at least two reports within a second, in both
    forms; SIGINT ends it quietly."""
    for extra in ([], ['--json']):
        status, out, err = _watch(['-w', '0.2', *extra, mounted.mnt])
        assert status == 0, err
        assert 'Traceback' not in err, err
        if extra:
            reports = [json.loads(l) for l in out.splitlines() if l.strip()]
        else:
            reports = [l for l in out.splitlines() if l.split()[:1] == ['drops']]
        assert len(reports) >= 2, f'{len(reports)} reports within a second:\n{out}'


def test_inboxfs_stat_watch_prints_time_and_rates(mounted, client):
    """R10's counters over time: -w prints each report's time and the counters'
    rates per second since the previous report."""
    def drops():
        for i in range(5):
            client.call(create_excl, os.path.join(mounted.mnt, f'RATE{i}.SVF'), b'x' * 100)

    status, out, err = _watch(['-w', '0.5', mounted.mnt], drops, seconds=1.3)
    assert status == 0, err
    reports = [r for r in out.split('\n\n') if r.strip()]
    assert len(reports) >= 2, out
    for report in reports:
        assert re.match(r'# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n', report), report
        assert 'bucket' in report, report
    rated = [re.search(r'^drops\s+(\d+)\s+([\d.]+)/s$', r, re.M) for r in reports[1:]]
    assert all(rated), out
    assert any(float(m.group(2)) > 0 for m in rated), out
    assert not re.search(r'^publish\.latency\.\S+\s+\d+\s+\S+/s$', out, re.M), out


@pytest.mark.parametrize('seconds', ['-1', '0', 'nan', 'inf', 'soon', ''])
def test_inboxfs_stat_watch_refuses_a_bad_interval_in_one_line(mounted, seconds):
    """-w takes a positive number of seconds: anything else is one line
    on stderr naming -w and the value, and exit status 2 (no traceback, no
    loop that never sleeps, no report first)."""
    proc = stat_tool('-w', seconds, mounted.mnt)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and lines[0].startswith('inboxfs-stat: -w'), lines
    assert repr(seconds) in lines[0], lines
    assert proc.stdout == ''


def test_inboxfs_stat_prometheus(mounted, client):
    client.call(create_excl, os.path.join(mounted.mnt, 'PROM.SVF'), b'counted')
    proc = stat_tool('--prometheus', mounted.mnt)
    assert proc.returncode == 0, proc.stderr
    samples = {}
    for line in proc.stdout.splitlines():
        if line.startswith('#'):
            assert re.match(r'# (TYPE \S+ (counter|gauge)|HELP \S+ .+)$', line), line
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
        assert m, f'not a Prometheus sample: {line!r}'
        samples[m.group(1) + (m.group(2) or '')] = float(m.group(3))
    assert samples['inboxfs_drops_total'] == 1
    assert samples['inboxfs_publications_total'] == 1
    assert 'inboxfs_sessions_alive' in samples and 'inboxfs_uptime_s' in samples
    assert samples['inboxfs_publish_latency_bound_seconds{quantile="0.99"}'] > 0
    assert '# TYPE inboxfs_drops_total counter' in proc.stdout


def _create_write_unlink_close(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.unlink(path)
    finally:
        os.close(fd)


def test_a_drop_deleted_before_its_close_counts_as_discarded(mounted, client):
    """Delete-on-close (create, write, unlink, close): nothing delivered,
    `discarded` counts it."""
    before = read_stats(mounted.mnt)
    client.call(_create_write_unlink_close, os.path.join(mounted.mnt, 'GONE0001.SVF'),
                b'never delivered')
    wait_until(lambda: read_stats(mounted.mnt)['discarded'] == before['discarded'] + 1,
               what='discarded to count the drop')
    after = read_stats(mounted.mnt)
    assert after['drops'] == before['drops'] + 1, (before, after)
    assert after['publications'] == before['publications'], (before, after)
    assert after['rewrites'] == before['rewrites'] and after['errors'] == before['errors']
    assert inbox_contents(mounted.inbox) == {}
    wait_until(lambda: not staged(mounted.inbox, acked=True),
               what='the staged drop to be removed')


# ============================================== the stats file is hidden (R10)

def _client_view_of_stats(mnt):
    path = os.path.join(mnt, STATS)
    return {
        'stat': errno_of(os.stat, path),
        'lstat': errno_of(os.lstat, path),
        'open': errno_of(lambda: os.close(os.open(path, os.O_RDONLY))),
        'listed': STATS in os.listdir(mnt),
    }


def test_clients_cannot_see_or_open_the_stats_file(mounted, client):
    """R2: to a client the file does not exist (ENOENT, in no
    listing); inboxfs-stat as a client says so."""
    # A session with an open drop of its own: its listing is not empty.
    session = client.session()
    fd = session.open(os.path.join(mounted.mnt, 'OPEN0001.SVF'),
                      os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    view = session.call(_client_view_of_stats, mounted.mnt)
    assert view == {'stat': errno.ENOENT, 'lstat': errno.ENOENT, 'open': errno.ENOENT,
                    'listed': False}, view
    assert session.listdir(mounted.mnt) == ['OPEN0001.SVF']
    session.close(fd)
    # Another client, a fresh session.
    assert client.call(_client_view_of_stats, mounted.mnt)['open'] == errno.ENOENT

    proc = client.run([STAT_TOOL, mounted.mnt], text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ''
    assert 'not an observer' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr


def test_observers_read_the_stats_file_but_cannot_change_it(mounted):
    """Root reads it, cannot write, truncate, chmod, rename or remove it;
    it is listed nowhere and creates nothing in the backing inbox."""
    path = os.path.join(mounted.mnt, STATS)
    st = os.stat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, oct(st.st_mode)
    assert STATS not in os.listdir(mounted.mnt)
    assert set(COUNTERS) <= set(read_stats(mounted.mnt))

    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                  os.O_WRONLY | os.O_TRUNC, os.O_RDWR | os.O_TRUNC):
        err = errno_of(lambda: os.close(os.open(path, flags)))
        assert err in (errno.EACCES, errno.EPERM, errno.EROFS), \
            f'open(.inboxfs-stats, {flags:#o}) by root: {errno.errorcode.get(err, err)}'
    assert errno_of(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    for what, fn in (('chmod', lambda: os.chmod(path, 0o666)),
                     ('chown', lambda: os.chown(path, CLIENT_UID, CLIENT_UID)),
                     ('truncate', lambda: os.truncate(path, 0)),
                     ('unlink', lambda: os.unlink(path)),
                     ('rename', lambda: os.rename(path, os.path.join(mounted.mnt, 'x'))),
                     ('utime', lambda: os.utime(path, (0, 0)))):
        err = errno_of(fn)
        assert err in (errno.EACCES, errno.EPERM, errno.EROFS), \
            f'{what} of .inboxfs-stats by root: {errno.errorcode.get(err, err) or "done"}'

    # O_RDONLY|O_TRUNC (unspecified by POSIX): whatever it answers, the
    # counters are not lost.
    errno_of(lambda: os.close(os.open(path, os.O_RDONLY | os.O_TRUNC)))
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o444 and st.st_uid == 0
    assert st.st_size > 0
    assert read_stats(mounted.mnt)['drops'] == 0
    assert not os.path.lexists(os.path.join(mounted.inbox, STATS))
    assert not os.path.lexists(os.path.join(mounted.mnt, 'x'))
    assert inbox_contents(mounted.inbox) == {}


def test_the_stats_name_never_reaches_a_shadowed_backing_file(mounted):
    """README: the stats file shadows a real `.inboxfs-stats` at the top of
    the inbox. Through the mount that name is the stats file, so removing
    or renaming it must not remove or move the hidden real file, and a
    message renamed onto that name must stay reachable through the mount."""
    real = os.path.join(mounted.inbox, STATS)
    write_file(real, b'a real message under the shadowed name')
    path = os.path.join(mounted.mnt, STATS)
    assert 'drops' in read_stats(mounted.mnt)
    for what, fn in (('unlink', lambda: os.unlink(path)),
                     ('rename', lambda: os.rename(path, os.path.join(mounted.mnt, 'moved')))):
        err = errno_of(fn)
        assert err in (errno.EACCES, errno.EPERM, errno.EROFS), \
            f'{what} of .inboxfs-stats by root: {errno.errorcode.get(err, err) or "done"}'
        with open(real, 'rb') as f:
            assert f.read() == b'a real message under the shadowed name', \
                f'{what} of the stats file changed the hidden backing file'
    assert not os.path.lexists(os.path.join(mounted.inbox, 'moved'))
    os.unlink(real)

    # A message renamed onto the stats name by an observer.
    write_file(os.path.join(mounted.mnt, 'MSG00009.SVF'), b'renamed onto the stats name')
    errno_of(os.rename, os.path.join(mounted.mnt, 'MSG00009.SVF'), path)
    reachable = {}
    for name in os.listdir(mounted.mnt):
        if name != STATS and os.path.isfile(os.path.join(mounted.mnt, name)):
            with open(os.path.join(mounted.mnt, name), 'rb') as f:
                reachable[name] = f.read()
    assert b'renamed onto the stats name' in reachable.values(), (
        f'a message renamed onto {STATS} is hidden behind the stats file: the mount '
        f'shows {sorted(reachable)}, the backing inbox '
        f'{sorted(os.listdir(mounted.inbox))}')
