"""Ready for a real server (issue 6 acceptance items 1, 3, 4 and 5; DESIGN
R10): the tools/run demo works from a fresh copy and its printed commands
work when pasted; the counters (.inboxfs-stats and tools/inboxfs-stat) and
the rewrite log match what a storm with collisions did; clients can neither
see nor open the stats file; every option in --help is documented and
mounted by a test here.

The tools/run tests build a copy of the repository (so they never fight
over build/): the first one takes about as long as a build, the others a
few seconds. They are not marked long, so they run by default: tools/run
is the product's main entry point; each wait has a deadline and the whole
group stays well under three minutes."""

import errno
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

import helpers
from helpers import (CLIENT_UID, SMB_FORCE_USER, SOURCE, TIMEOUT, Client, create_excl,
                     errno_of, inbox_contents, mountinfo, process_group, processes, read_log,
                     run_together, staged, wait_until)

STATS = '.inboxfs-stats'
STAT_TOOL = os.path.join(SOURCE, 'tools', 'inboxfs-stat')
# The counters README.md and the brief name; the file must hold them all.
COUNTERS = ('drops', 'bytes', 'publications', 'rewrites', 'discarded',
            'quarantines', 'recoveries', 'errors', 'sessions.alive',
            'sessions.started', 'sessions.ended', 'publish.latency.p50_us',
            'publish.latency.p90_us', 'publish.latency.p99_us', 'uptime_s')
REWRITE_LINE = re.compile(
    r'rewrite: "(?P<requested>[^"]*)" stored as "(?P<stored>[^"]*)" '
    r'\(client (?P<client>\S+), pid (?P<pid>\d+), uid (?P<uid>\d+)\)')
# R9 / README: STEM~TAG.EXT, the tag 12 base-32 characters.
TAG = '[0-9A-Z]'

# tools/run: the build of a fresh copy, then the start of the demo.
DEMO_START_DEADLINE = 150.0
DEMO_STOP_DEADLINE = 30.0


# ------------------------------------------------------------------ helpers

def read_stats(mnt):
    """{name: int} from MOUNTPOINT/.inboxfs-stats (as root: an observer)."""
    stats = {}
    with open(os.path.join(mnt, STATS), encoding='ascii') as f:
        for line in f:
            name, _, value = line.strip().partition(' ')
            if name:
                stats[name] = int(value)
    return stats


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


def write_file(path, data, mode=0o644):
    with open(path, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)


class GroupClient(Client):
    """A client uid with supplementary groups (helpers.Client drops them)."""

    def __init__(self, uid, gid, groups):
        super().__init__(uid, gid)
        self.groups = list(groups)

    def _drop(self):
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)


def _view_of(mnt, name):
    """What a requester sees of the inbox: its listing, and NAME's bytes
    (or the errno reading it fails with)."""
    listing = sorted(os.listdir(mnt))
    try:
        with open(os.path.join(mnt, name), 'rb') as f:
            return listing, f.read()
    except OSError as e:
        return listing, e.errno


def _read_stats_or_errno(mnt):
    try:
        return read_stats(mnt)
    except OSError as e:
        return e.errno


# ============================================================ tools/run demo

def _is_build_dir(path):
    name = os.path.basename(path)
    return (name == 'build' or name.startswith('build-')
            or os.path.isdir(os.path.join(path, 'meson-private')))


def copy_source(dest):
    """The repository without its build directories (and caches)."""
    def ignore(directory, names):
        skipped = set()
        for name in names:
            path = os.path.join(directory, name)
            if name in ('.pytest_cache', '__pycache__'):
                skipped.add(name)
            elif os.path.isdir(path) and not os.path.islink(path) and _is_build_dir(path):
                skipped.add(name)
            elif not (os.path.isdir(path) or os.path.isfile(path) or os.path.islink(path)):
                skipped.add(name)     # sockets, fifos
        return skipped
    shutil.copytree(SOURCE, dest, symlinks=True, ignore=ignore)
    return dest


def require_demo_prerequisites():
    if os.geteuid() != 0:
        pytest.skip('tools/run mounts and starts smbd: run as root')
    if not os.path.exists('/dev/fuse') or not shutil.which('fusermount3'):
        pytest.skip('FUSE is not available (/dev/fuse, fusermount3)')
    reason = helpers.samba_prerequisites()
    if reason:
        pytest.skip(reason)
    if not os.access(os.path.join(SOURCE, 'tools', 'run'), os.X_OK):
        pytest.fail(f'{SOURCE}/tools/run is missing or not executable')


@pytest.fixture(scope='module')
def demo_repo():
    """A copy of the repository, shared by the tools/run tests of this
    module: the first run builds its build/, the others reuse it."""
    require_demo_prerequisites()
    base = helpers.make_base_dir('inboxfs-run-')
    repo = copy_source(os.path.join(base, 'repo'))
    yield repo
    if not any(m.split()[4].startswith(base) for m in open('/proc/self/mountinfo')):
        shutil.rmtree(base, ignore_errors=True)


def _descendants(pid):
    """{pid: comm} of the live descendants of PID."""
    procs = processes()
    found, parents = {}, {pid}
    while parents:
        children = {p: comm for p, (ppid, _pgrp, comm) in procs.items()
                    if ppid in parents and p not in found}
        found.update(children)
        parents = set(children)
    return found


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(')') + 2:].split()[0] not in ('Z', 'X')


class Demo:
    """`tools/run` (no arguments) started from REPO in a process group of
    its own, with its output in a file."""

    def __init__(self, repo, workdir):
        self.repo = repo
        self.workdir = workdir
        self.port = helpers.free_port()
        self.out_path = os.path.join(workdir, f'tools-run-{self.port}.out')
        self.proc = None
        self.pgid = None
        self.started_at = None
        self.demo_dir = self.inbox = self.mnt = self.log_path = None
        self.daemon_pid = None
        self.smbd_pids = []
        self.descendants = {}

    def output(self):
        return read_log(self.out_path)

    def start(self):
        env = dict(os.environ, INBOXFS_DEMO_PORT=str(self.port))
        self.started_at = time.monotonic()
        with open(self.out_path, 'wb') as out:
            self.proc = subprocess.Popen(
                [os.path.join(self.repo, 'tools', 'run')], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                start_new_session=True)
        self.pgid = self.proc.pid
        return self

    def wait_ready(self, timeout=DEMO_START_DEADLINE):
        deadline = time.monotonic() + timeout
        while 'Press Ctrl-C' not in self.output():
            if self.proc.poll() is not None:
                self._find_demo_dir()
                raise AssertionError(
                    f'tools/run exited with status {self.proc.returncode} before the '
                    f'demo was ready; its output:\n{self.output()}')
            if time.monotonic() > deadline:
                raise AssertionError(f'tools/run did not print "Press Ctrl-C" within '
                                     f'{timeout:.0f}s; its output:\n{self.output()}')
            time.sleep(0.1)
        out = self.output()
        self.inbox = _field(out, r'real inbox:\s*(\S+)')
        self.mnt = _field(out, r'inboxfs mount:\s*(\S+)')
        self.log_path = _field(out, r'\(log:\s*(\S+?)\)')
        self.demo_dir = os.path.dirname(self.inbox)
        # smbd's own children (notifyd, cleanupd, ...) are named after
        # their role: every descendant must be gone after the stop.
        self.descendants = _descendants(self.proc.pid)
        children = {p: comm for p, (ppid, _pgrp, comm) in processes().items()
                    if ppid == self.proc.pid}
        daemons = [p for p, comm in children.items() if comm == 'inboxfs']
        self.smbd_pids = [p for p, comm in children.items() if comm == 'smbd']
        assert len(daemons) == 1, f'tools/run children: {children}'
        assert self.smbd_pids, f'no smbd among the children of tools/run: {children}'
        self.daemon_pid = daemons[0]
        return self

    def _find_demo_dir(self):
        """The demo directory of a run that failed before printing it: the
        /tmp/inboxfs-demo.* whose smb.conf has our port (no one else's)."""
        if self.demo_dir:
            return
        for entry in os.scandir('/tmp'):
            if not entry.name.startswith('inboxfs-demo.'):
                continue
            try:
                with open(os.path.join(entry.path, 'samba', 'smb.conf')) as f:
                    if re.search(rf'smb ports = {self.port}\b', f.read()):
                        self.demo_dir = entry.path
                        self.mnt = os.path.join(entry.path, 'mnt')
                        return
            except OSError:
                continue

    def processes(self):
        """The pids that must be gone once the demo stopped: its daemon,
        smbd and every other process started under tools/run."""
        return sorted(set(self.smbd_pids) | {self.daemon_pid} | set(self.descendants)
                      - {None})

    def wait_exit(self, timeout=DEMO_STOP_DEADLINE):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'tools/run did not exit within {timeout:.0f}s of the '
                                 f'signal; its output:\n{self.output()}') from None

    def cleanup(self):
        """Whatever happened: no process of ours left, nothing mounted, the
        demo directory removed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # smbd's children and the daemon outlive tools/run when it is killed;
        # they are still in its process group (a group id is not reused while
        # a member lives, so killpg is safe).
        try:
            wait_until(lambda: not process_group(self.pgid), 10, what='demo processes')
        except TimeoutError:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._find_demo_dir()
        if self.mnt and mountinfo(self.mnt):
            subprocess.run(['fusermount3', '-u', '-z', self.mnt], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT)
        if self.demo_dir and not os.environ.get('INBOXFS_KEEP'):
            if not any(m.split()[4].startswith(self.demo_dir)
                       for m in open('/proc/self/mountinfo')):
                shutil.rmtree(self.demo_dir, ignore_errors=True)


def _field(text, regex):
    m = re.search(regex, text)
    assert m, f'tools/run printed no match for {regex!r}:\n{text}'
    return m.group(1)


def assert_stopped(demo):
    """After the signal: tools/run ran its cleanup to the end and exited
    (not killed), nothing is mounted, its smbd and daemon are gone."""
    status = demo.wait_exit()
    out = demo.output()
    assert status >= 0, (
        f'tools/run was killed by signal {-status} during its cleanup instead of '
        f'exiting (smbd --no-process-group shares its process group, and smbd '
        f'signals its group when it stops); its output:\n{out}')
    assert 'the inbox stays in' in out.split('stopping the demo', 1)[-1], \
        f'tools/run did not finish its cleanup; its output:\n{out}'
    wait_until(lambda: not mountinfo(demo.mnt), TIMEOUT, what=f'{demo.mnt} unmounted')
    try:
        wait_until(lambda: not [p for p in demo.processes() if _alive(p)], TIMEOUT,
                   what='the demo processes to exit')
    except TimeoutError:
        left = {p: demo.descendants.get(p) for p in demo.processes() if _alive(p)}
        raise AssertionError(f'demo processes still running after tools/run exited: '
                             f'{left}') from None
    wait_until(lambda: not process_group(demo.pgid), TIMEOUT,
               what='the demo process group to be empty')


def _pasted_commands(out):
    """The commands tools/run tells the user to try, in order."""
    commands = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(('smbclient ', 'echo ', 'ls -l', 'grep ')):
            commands.append(line)
    return commands


def _put_of(command):
    """(local, remote) of a printed `smbclient ... -c 'put LOCAL REMOTE'`."""
    argv = shlex.split(command)
    script = argv[argv.index('-c') + 1]
    words = shlex.split(script)
    if words and words[0] == 'put':
        assert len(words) == 3, f'unexpected put command: {command}'
        return words[1], words[2]
    return None


class SavedFiles:
    """The demo's echo lines overwrite files (/tmp/a.txt): put back what
    was there before."""

    def __init__(self, paths):
        self.saved = {}
        for path in paths:
            try:
                with open(path, 'rb') as f:
                    self.saved[path] = (f.read(), os.stat(path).st_mode)
            except FileNotFoundError:
                self.saved[path] = None

    def restore(self):
        for path, old in self.saved.items():
            try:
                if old is None:
                    os.unlink(path)
                else:
                    write_file(path, old[0], stat.S_IMODE(old[1]))
            except OSError:
                pass


def _get_of(command):
    """The local file of a printed `smbclient ... -c 'get REMOTE LOCAL; ...'`."""
    argv = shlex.split(command)
    for part in argv[argv.index('-c') + 1].split(';'):
        words = shlex.split(part)
        if words and words[0] == 'get':
            return words[2]
    return None


def test_run_demo_commands_work_when_pasted(demo_repo):
    """Acceptance 1 (issue 6) and 2 (issue 13): tools/run builds a fresh
    copy, mounts a demo inbox on a separate read-only mountpoint, exports
    the mount to clients and the real inbox to the consumer on loopback
    Samba; the commands it prints (two SMB2 clients and an SMB1 client
    dropping one name, the consumer listing and picking one up) work
    pasted into a shell; Ctrl-C (SIGINT to its process group, as a
    terminal sends it) unmounts, stops Samba and removes its temporary
    files."""
    demo = Demo(demo_repo, os.path.dirname(demo_repo)).start()
    saved = None
    try:
        demo.wait_ready()
        out = demo.output()
        assert f'port {demo.port}' in out, out
        assert [m[1] for m in mountinfo(demo.mnt)] == ['fuse.inboxfs'], mountinfo(demo.mnt)
        assert demo.mnt != demo.inbox, 'the demo over-mounts the inbox'
        assert 'tools/run: demo directory' in out, out

        commands = _pasted_commands(out)
        clients = [c for c in commands if c.startswith('smbclient //127.0.0.1/inbox ')]
        consumer = [c for c in commands if c.startswith('smbclient //127.0.0.1/consumer ')]
        puts = [p for p in map(_put_of, clients) if p]
        assert len(puts) == 3, f'expected three smbclient puts, got {commands}'
        assert len({remote for _, remote in puts}) == 1, f'the puts use different names: {puts}'
        smb1 = [c for c in clients if _put_of(c) and '-m NT1' in c]
        assert len(smb1) == 1, f'no SMB1 client command: {clients}'
        assert consumer and any('del ' in c for c in consumer), commands
        assert any(c.startswith('ls -l') for c in commands), commands
        assert any(c.startswith('grep ') for c in commands), commands
        targets = [m.group(1) for c in commands if c.startswith('echo ')
                   for m in [re.search(r'>\s*(\S+)', c)] if m]
        picked = [p for p in map(_get_of, consumer) if p]
        assert len(picked) == 1, consumer
        saved = SavedFiles(targets + picked)

        results = []
        for command in commands:
            proc = subprocess.run(['bash', '-c', command], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=TIMEOUT * 3,
                                  cwd=demo.workdir)
            results.append((command, proc))
            assert proc.returncode == 0, \
                f'pasted command failed ({proc.returncode}): {command}\n' \
                f'{proc.stdout}{proc.stderr}'
            if command.startswith('smbclient'):
                assert 'NT_STATUS_' not in proc.stdout + proc.stderr, \
                    f'{command}\n{proc.stdout}{proc.stderr}'

        requested = puts[0][1]
        payloads = []
        for local, _ in puts:
            with open(local, 'rb') as f:
                payloads.append(f.read())
        assert len(set(payloads)) == 3
        stem, ext = os.path.splitext(requested)
        # The consumer picked up and deleted the first; the other two stay
        # under unique names.
        with open(picked[0], 'rb') as f:
            assert f.read() == payloads[0]
        found = inbox_contents(demo.inbox)
        assert sorted(found.values()) == sorted(payloads[1:]), found
        others = sorted(found)
        for name in others:
            assert re.fullmatch(rf'{re.escape(stem)}~{TAG}{{12}}{re.escape(ext)}', name), \
                others

        listing = next(p.stdout for c, p in results if c.startswith('ls -l'))
        assert requested in listing and all(n in listing for n in others), listing
        grep = next(p.stdout for c, p in results if c.startswith('grep '))
        for name in others:
            assert f'"{requested}" stored as "{name}"' in grep, grep
        consumer_ls = next(p.stdout for c, p in results
                           if c.startswith('smbclient //127.0.0.1/consumer ') and "'ls'" in c)
        assert all(n in consumer_ls for n in others + [requested]), consumer_ls
        assert '.inboxfs' not in consumer_ls, consumer_ls

        os.killpg(demo.pgid, signal.SIGINT)       # Ctrl-C
        assert_stopped(demo)
        assert inbox_contents(demo.inbox) == found, 'the inbox changed when the demo stopped'
        # Only the inbox is left of the demo.
        assert sorted(os.listdir(demo.demo_dir)) == ['inbox'], os.listdir(demo.demo_dir)
        assert time.monotonic() - demo.started_at < 180
    finally:
        if saved:
            saved.restore()
        demo.cleanup()


def test_run_demo_stops_on_sigterm_to_tools_run(demo_repo):
    """`kill PID` of tools/run alone (no terminal): the same clean stop."""
    demo = Demo(demo_repo, os.path.dirname(demo_repo)).start()
    try:
        demo.wait_ready()
        samba = helpers.Samba(demo.mnt, demo.workdir)
        samba.port = demo.port
        proc = samba.smbclient('ls', user='inboxdemo', password='demo')
        assert proc.returncode == 0, proc.stdout + proc.stderr
        demo.proc.send_signal(signal.SIGTERM)
        assert_stopped(demo)
    finally:
        demo.cleanup()


def _debian_package_of_dependency(name):
    """The Debian package holding pkg-config module NAME's .pc file."""
    proc = subprocess.run(['pkg-config', '--path', name], capture_output=True,
                          text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        return None
    pc = os.path.realpath(proc.stdout.strip())
    proc = subprocess.run(['dpkg', '-S', pc], capture_output=True, text=True,
                          timeout=TIMEOUT)
    if proc.returncode != 0:
        return None
    return proc.stdout.split(':')[0].strip()


def test_run_installs_every_build_dependency():
    """Acceptance 1, "from a fresh machine": tools/run installs what is
    missing, so its package list must hold every package the build needs
    (each required meson dependency(), resolved here to the package owning
    its .pc)."""
    if not shutil.which('dpkg') or not shutil.which('pkg-config'):
        pytest.skip('needs dpkg and pkg-config')
    with open(os.path.join(SOURCE, 'tools', 'run')) as f:
        m = re.search(r'^packages=\(([^)]*)\)', f.read(), re.M)
    assert m, 'tools/run has no packages=(...) list'
    listed = set(m.group(1).split())
    deps = set()
    for top, dirs, files in os.walk(SOURCE):
        dirs[:] = [d for d in dirs if not d.startswith('.')
                   and not _is_build_dir(os.path.join(top, d))]
        if 'meson.build' in files:
            with open(os.path.join(top, 'meson.build')) as f:
                text = f.read()
            # Required ones only: not `required : false` (nor an option).
            for m in re.finditer(r"""\bdependency\(\s*'([^']+)'([^)]*)\)""", text):
                if not re.search(r'\brequired\s*:', m.group(2)):
                    deps.add(m.group(1))
    deps.discard('threads')
    missing, unknown = {}, []
    for dep in sorted(deps):
        package = _debian_package_of_dependency(dep)
        if package is None:
            unknown.append(dep)
        elif package not in listed:
            missing[dep] = package
    assert not unknown, f'cannot tell which package provides {unknown}'
    assert not missing, (f'tools/run does not install the packages of these meson '
                         f'dependencies (dependency: package): {missing}; on a fresh '
                         f'machine its build fails')


def test_run_shows_why_a_build_fails(tmp_path):
    """A build that fails must say why: tools/run exits non-zero and its
    output names the compiler error, not nothing."""
    require_demo_prerequisites()
    base = helpers.make_base_dir('inboxfs-run-broken-')
    try:
        repo = copy_source(os.path.join(base, 'repo'))
        with open(os.path.join(repo, 'fs', 'main.c'), 'a') as f:
            f.write('\nthis_is_not_c inboxfs_broken_on_purpose(\n')
        env = dict(os.environ, INBOXFS_DEMO_PORT=str(helpers.free_port()))
        proc = subprocess.run([os.path.join(repo, 'tools', 'run')], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=DEMO_START_DEADLINE, cwd=base,
                              start_new_session=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert 'main.c' in out and 'inboxfs_broken_on_purpose' in out, (
            f'tools/run failed ({proc.returncode}) without showing the compiler '
            f'error; its whole output:\n{out!r}')
        assert 'Press Ctrl-C' not in out
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ============================================================ counters (R10)

def test_counters_and_log_after_a_storm_with_collisions(mount_inboxfs):
    """Acceptance 3: 20 clients create one name at once; the virtual file,
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
                'recoveries': 0, 'errors': 0}
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


def test_inboxfs_stat_watch_prints_repeatedly(mounted):
    """inboxfs-stat -w 0.2: at least two reports within a second, in both
    forms; SIGINT ends it quietly."""
    for extra in ([], ['--json']):
        proc = subprocess.Popen([STAT_TOOL, '-w', '0.2', *extra, mounted.mnt],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            assert proc.poll() is None, f'inboxfs-stat -w exited: {proc.communicate()}'
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert 'Traceback' not in err, err
        if extra:
            reports = [json.loads(l) for l in out.splitlines() if l.strip()]
        else:
            reports = [l for l in out.splitlines() if l.split()[:1] == ['drops']]
        assert len(reports) >= 2, f'{len(reports)} reports within a second:\n{out}'


def test_inboxfs_stat_watch_prints_time_and_rates(mounted, client):
    """Issue 13 item 6: -w prints each report's time and the counters'
    rates per second since the previous report."""
    proc = subprocess.Popen([STAT_TOOL, '-w', '0.5', mounted.mnt], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        for i in range(5):
            client.call(create_excl, os.path.join(mounted.mnt, f'RATE{i}.SVF'), b'x' * 100)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    reports = [r for r in out.split('\n\n') if r.strip()]
    assert len(reports) >= 2, out
    for report in reports:
        assert re.match(r'# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n', report), report
        assert 'bucket' in report, report
    rated = [re.search(r'^drops\s+(\d+)\s+([\d.]+)/s$', r, re.M) for r in reports[1:]]
    assert all(rated), out
    assert any(float(m.group(2)) > 0 for m in rated), out
    assert not re.search(r'^publish\.latency\.\S+\s+\d+\s+\S+/s$', out, re.M), out


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
    assert f'# TYPE inboxfs_drops_total counter' in proc.stdout


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
    """Acceptance 4: to a client the file does not exist (ENOENT, in no
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


# ============================================ every option: docs and tests

def _help_options():
    proc = helpers.run_inboxfs('--help')
    assert proc.returncode == 0, proc.stderr
    options = re.findall(r'-o\s+([a-z_]+)=', proc.stdout + proc.stderr)
    assert options, proc.stdout + proc.stderr
    return options


def _man_pages():
    found = []
    for top, dirs, files in os.walk(SOURCE):
        dirs[:] = [d for d in dirs if not d.startswith('.')
                   and not _is_build_dir(os.path.join(top, d))]
        found += [os.path.join(top, f) for f in files if re.fullmatch(r'inboxfs\.8(\..+)?', f)]
    return found


def test_every_option_is_documented_and_tested(run_inboxfs):
    """Acceptance 5: each `-o NAME=` of --help is in README.md (and the man
    page) and mounted by at least one integration test."""
    options = _help_options()
    assert set(options) >= {'observers', 'staging', 'sync', 'names', 'linger'}, options
    with open(os.path.join(SOURCE, 'README.md')) as f:
        readme = f.read()
    undocumented = [o for o in options if f'{o}=' not in readme]
    assert not undocumented, f'README.md does not document {undocumented}'

    pages = _man_pages()
    for page in pages:
        with open(page, errors='replace') as f:
            text = f.read().replace('\\-', '-').replace('\\&', '')
        missing = [o for o in options if not re.search(rf'\b{o}=', text)]
        assert not missing, f'{page} does not list {missing}'

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    sources = ''
    for name in sorted(os.listdir(tests_dir)):
        if name.startswith('test_') and name.endswith('.py'):
            with open(os.path.join(tests_dir, name)) as f:
                sources += f.read()
    # A mount_inboxfs(NAME=...) keyword or a literal '-o NAME=...' option.
    untested = [o for o in options
                if not re.search(rf"mount_inboxfs\([^)]*\b{o}=|['\"]{o}=", sources)]
    assert not untested, f'no test mounts with {untested}'
    if not pages:
        pytest.skip('no man page inboxfs.8 in the source yet (issue 6 item 2): README '
                    'and tests checked')


OBSERVER_GID = 60050


def test_observers_group_sees_the_whole_inbox(mount_inboxfs):
    """observers=root:@GID: a uid whose group (primary or supplementary) is
    GID sees and reads every file, and the stats; other uids are clients."""
    m = mount_inboxfs(observers=f'root:@{OBSERVER_GID}')
    write_file(os.path.join(m.inbox, 'FOR-ALL.TXT'), b'in the inbox')

    primary = Client(60003, OBSERVER_GID)
    supplementary = GroupClient(60004, 60004, [OBSERVER_GID])
    for who in (primary, supplementary):
        listing, data = who.call(_view_of, m.mnt, 'FOR-ALL.TXT')
        assert 'FOR-ALL.TXT' in listing and data == b'in the inbox', (who.uid, listing, data)
        stats = who.call(_read_stats_or_errno, m.mnt)
        assert isinstance(stats, dict) and 'drops' in stats, (who.uid, stats)

    outsider = Client(CLIENT_UID)
    listing, data = outsider.call(_view_of, m.mnt, 'FOR-ALL.TXT')
    assert listing == [] and data == errno.ENOENT, (listing, data)
    assert outsider.call(_read_stats_or_errno, m.mnt) == errno.ENOENT
    # The outsider's drop of the same name is a client create: rewritten.
    outsider.call(create_excl, os.path.join(m.mnt, 'FOR-ALL.TXT'), b'a drop')
    found = inbox_contents(m.inbox)
    assert found['FOR-ALL.TXT'] == b'in the inbox' and b'a drop' in found.values(), found


def test_observers_second_uid_and_user_name(mount_inboxfs):
    """observers=root:UID:NAME: both accounts see the whole inbox."""
    account = helpers.ensure_system_user(SMB_FORCE_USER)
    m = mount_inboxfs(observers=f'root:60005:{SMB_FORCE_USER}')
    write_file(os.path.join(m.inbox, 'SEEN0001.SVF'), b'for observers')
    for who in (Client(60005), Client(account.pw_uid, account.pw_gid)):
        listing, data = who.call(_view_of, m.mnt, 'SEEN0001.SVF')
        assert listing == ['SEEN0001.SVF'] and data == b'for observers', (who.uid, listing)
    listing, data = Client(CLIENT_UID).call(_view_of, m.mnt, 'SEEN0001.SVF')
    assert listing == [] and data == errno.ENOENT
    assert read_stats(m.mnt)['drops'] == 0      # root is still an observer


def _staged_files(staging):
    return staged(None, acked=True, staging=staging)


def test_staging_dir_holds_drops_until_delivered(mount_inboxfs, client, tmp_path):
    """staging=DIR (same filesystem, elsewhere): an open drop is written
    there, not in the inbox; at its close it is delivered and leaves DIR."""
    staging = tmp_path / 'staging'
    staging.mkdir()
    m = mount_inboxfs(staging=str(staging))
    assert os.stat(staging).st_dev == os.stat(m.inbox).st_dev
    before = set(_staged_files(staging))

    session = client.session()
    fd = session.open(os.path.join(m.mnt, 'STAGED01.SVF'),
                      os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    session.write(fd, b'staged elsewhere')
    new = [n for n in _staged_files(staging) if n not in before]
    assert len(new) == 1, f'staging holds {_staged_files(staging)}'
    with open(staging / new[0], 'rb') as f:
        assert f.read() == b'staged elsewhere'
    assert inbox_contents(m.inbox) == {}
    default = os.path.join(m.inbox, '.inboxfs')
    if os.path.isdir(default):
        assert not [n for n in os.listdir(default) if n.startswith('d.')], \
            os.listdir(default)
    session.close(fd)

    assert inbox_contents(m.inbox) == {'STAGED01.SVF': b'staged elsewhere'}
    wait_until(lambda: set(_staged_files(staging)) <= before, what='the drop to leave staging')


def test_staging_on_another_filesystem_is_refused(run_inboxfs, tmp_path):
    """staging=DIR on another filesystem (/dev/shm): one line on stderr, a
    non-zero exit, nothing mounted, nothing written (R11). test_startup.py
    checks the same among the other bad inputs; here it completes the
    staging= option's own tests."""
    inbox, mnt = tmp_path / 'inbox', tmp_path / 'mnt'
    inbox.mkdir()
    mnt.mkdir()
    if not os.path.isdir('/dev/shm') or os.stat('/dev/shm').st_dev == os.stat(inbox).st_dev:
        pytest.skip('/dev/shm is not another filesystem than the test directory')
    staging = tempfile.mkdtemp(prefix='inboxfs-staging-', dir='/dev/shm')
    try:
        assert os.stat(staging).st_dev != os.stat(inbox).st_dev
        proc = run_inboxfs('-o', f'staging={staging}', inbox, mnt)   # no -f
        mounted = bool(mountinfo(str(mnt)))
        if mounted:
            subprocess.run(['fusermount3', '-u', '-z', str(mnt)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT)
        assert not mounted, f'staging on another filesystem was mounted: {proc.stderr!r}'
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert proc.returncode != 0 and len(lines) == 1, (proc.returncode, lines)
        assert 'staging' in lines[0], lines[0]
        assert os.listdir(staging) == [] and os.listdir(inbox) == []
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def test_sync_none_delivers_drops(mount_inboxfs):
    """sync=none: drops, colliding ones too, are delivered at their close."""
    m = mount_inboxfs(sync='none')
    path = os.path.join(m.mnt, 'NOSYNC01.SVF')
    Client(CLIENT_UID).call(create_excl, path, b'first')
    Client(CLIENT_UID + 1).call(create_excl, path, b'second')
    found = inbox_contents(m.inbox)
    assert found.pop('NOSYNC01.SVF') == b'first'
    assert list(found.values()) == [b'second'], found
    assert re.fullmatch(rf'NOSYNC01~{TAG}{{12}}\.SVF', next(iter(found)))
    stats = read_stats(m.mnt)
    assert (stats['publications'], stats['rewrites'], stats['errors']) == (2, 1, 0), stats


def _collide(m, name, data=b'the colliding drop'):
    """Put NAME in the backing inbox, then have a client create it: the
    name the drop got."""
    write_file(os.path.join(m.inbox, name), b'already there')
    before = set(inbox_contents(m.inbox))
    Client(CLIENT_UID).call(create_excl, os.path.join(m.mnt, name), data)
    found = inbox_contents(m.inbox)
    new = [n for n in found if n not in before]
    assert len(new) == 1 and found[new[0]] == data, sorted(found)
    assert found[name] == b'already there'
    return new[0]


def test_names_8_3(mount_inboxfs):
    """names=8.3: a collision gets 8 tag characters, a dot and at most 3
    of the extension's, its case kept."""
    m = mount_inboxfs(names='8.3')
    got = _collide(m, 'MSG00001.SVF')
    assert re.fullmatch(rf'{TAG}{{8}}\.SVF', got), got
    got = _collide(m, 'report.json')
    assert re.fullmatch(rf'{TAG}{{8}}\.jso', got), got
    assert re.search(rf'rewrite: "report\.json" stored as "{re.escape(got)}"', m.log())


def test_names_custom_template(mount_inboxfs):
    """names=%s-%6t%e: STEM-TAG6.EXT."""
    m = mount_inboxfs(names='%s-%6t%e')
    got = _collide(m, 'MSG00001.SVF')
    assert re.fullmatch(rf'MSG00001-{TAG}{{6}}\.SVF', got), got
    got = _collide(m, 'noext')
    assert re.fullmatch(rf'noext-{TAG}{{6}}', got), got


def test_linger_0_is_accepted(mount_inboxfs, client):
    """linger=0 (the default, explicit): a drop is in the inbox when its
    close returns."""
    m = mount_inboxfs(linger=0)
    client.call(create_excl, os.path.join(m.mnt, 'LINGER00.SVF'), b'at once')
    assert inbox_contents(m.inbox) == {'LINGER00.SVF': b'at once'}


def test_linger_other_than_0(run_inboxfs, mount_inboxfs, as_client, tmp_path):
    """linger=N: a closed drop stays visible to its session and is
    published only after N seconds."""
    m = mount_inboxfs(linger=2)
    session = as_client().session()
    other = as_client(CLIENT_UID + 1)
    path = os.path.join(m.mnt, 'LINGER02.SVF')
    fd = session.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    session.write(fd, b'lingering')
    session.close(fd)
    closed = time.monotonic()
    assert session.stat(path).st_size == len(b'lingering')
    assert 'LINGER02.SVF' in session.listdir(m.mnt)
    assert inbox_contents(m.inbox) == {}, 'published before linger= elapsed'
    assert other.call(_view_of, m.mnt, 'LINGER02.SVF') == ([], errno.ENOENT)
    wait_until(lambda: inbox_contents(m.inbox), 2 + TIMEOUT, interval=0.05,
               what='the lingering drop to be published')
    assert time.monotonic() - closed >= 1.5, 'published well before linger=2 elapsed'
    assert inbox_contents(m.inbox) == {'LINGER02.SVF': b'lingering'}
