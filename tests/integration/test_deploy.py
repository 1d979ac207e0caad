"""Ready for a real server (README "Quick start"; the counters and options
are test_stats.py's and test_options.py's): the tools/run demo
works from a fresh copy and its printed commands work when pasted; it
stops on SIGTERM; tools/run installs every build dependency and shows why
a build fails.

The tools/run tests build a copy of the repository (so they never fight
over build/): the first one takes about as long as a build, the others a
few seconds. They are not marked long, so they run by default: tools/run
is the product's main entry point; each wait has a deadline and the whole
group stays well under three minutes."""

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time

import pytest

import helpers
from helpers import (SOURCE, TAG, TIMEOUT, copy_source, inbox_contents, is_build_dir, mountinfo,
                     process_group, processes, read_log, wait_until, write_file)


# tools/run: the build of a fresh copy, then the start of the demo.
DEMO_START_DEADLINE = 150.0
DEMO_STOP_DEADLINE = 30.0


# ============================================================ tools/run demo

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
    if not helpers.mounted_under(base):
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
        # The transport is the test pass's (tools/with-uring), not the unit's.
        env = dict(os.environ, INBOXFS_DEMO_PORT=str(self.port), INBOXFS_URING='keep')
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
            if not helpers.mounted_under(self.demo_dir):
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
    """README "Quick start": tools/run builds a fresh
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
    """README "Quick start", from a fresh machine: tools/run installs what is
    missing, so its package list must hold every package the build needs (each
    required meson dependency(), resolved here to the package owning its
    .pc)."""
    if not shutil.which('dpkg') or not shutil.which('pkg-config'):
        pytest.skip('needs dpkg and pkg-config')
    with open(os.path.join(SOURCE, 'tools', 'run')) as f:
        m = re.search(r'^packages=\(([^)]*)\)', f.read(), re.M)
    assert m, 'tools/run has no packages=(...) list'
    listed = set(m.group(1).split())
    deps = set()
    for top, dirs, files in os.walk(SOURCE):
        dirs[:] = [d for d in dirs if not d.startswith('.')
                   and not is_build_dir(os.path.join(top, d))]
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


def test_run_leaves_no_samba_service_running_that_it_installed(tmp_path):
    """README "Quick start": where systemd runs, installing Debian's samba
    package starts and enables smbd and nmbd (port 445); tools/run says so and
    stops and disables them again. Played with stand-ins: a dpkg-query that
    finds samba missing, an apt-get that installs nothing, a systemctl that
    records its calls (smbd and nmbd enabled and running), a meson that fails
    (the build is not the point), and /run/systemd/system present in a private
    mount namespace. Only a copy of tools/run runs."""
    if os.geteuid() != 0 or not shutil.which('unshare'):
        pytest.skip('needs root and unshare for a private /run')
    tools = tmp_path / 'repo' / 'tools'
    tools.mkdir(parents=True)
    shutil.copy(os.path.join(SOURCE, 'tools', 'run'), tools / 'run')
    stubs = tmp_path / 'bin'
    stubs.mkdir()
    calls = tmp_path / 'systemctl.calls'
    scripts = {
        'dpkg-query': '[ "$3" = samba ] && exit 1; echo "install ok installed"',
        'apt-get': 'exit 0',
        'systemctl': f'echo "$*" >> {calls}; exit 0',
        'meson': 'exit 1',
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f'#!/bin/sh\n{body}\n')
        (stubs / name).chmod(0o755)
    env = dict(os.environ, PATH=f'{stubs}:{os.environ["PATH"]}')
    proc = subprocess.run(
        ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
         'mount -t tmpfs none /run && mkdir -p /run/systemd/system && exec "$0"',
         str(tools / 'run')],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT * 6)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out          # the stand-in meson stopped it
    assert 'installing samba' in out and 'smbd' in out.split('installing samba', 1)[1], out
    recorded = calls.read_text().splitlines() if calls.exists() else []
    for unit in ('smbd.service', 'nmbd.service'):
        assert f'disable --now {unit}' in recorded, recorded
