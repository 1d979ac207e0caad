"""The Debian package (Installing): `dpkg-buildpackage -us -uc -b` of a copy
of the tree builds it, lintian finds nothing to report, apt installs it,
the installed unit's commands (run by hand: no systemd is PID 1 here) serve
a scratch inbox through the installed daemon, a client's drops arrive, the
installed tools work on it, and `apt-get purge` leaves nothing of the
package but what README.md says stays: the inbox (its .inboxfs/ with
incomplete/ too), the mountpoint the unit made, and the account
inboxfs-smb.

The package is installed on this machine for the length of the test and
purged in every case, also when the test fails. The test is skipped where a
package named inboxfs is installed already: it never replaces or removes
one it did not install. About 30 s (the build takes a few seconds)."""

import glob
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile

import pytest

import helpers
from helpers import TIMEOUT, copy_source, make_base_dir, wait_until

APT = ['apt-get', '-q', '-y', '-o', 'DPkg::Lock::Timeout=300']
APT_ENV = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
UNITDIRS = ('/lib/systemd/system', '/usr/lib/systemd/system')


def run(argv, timeout=TIMEOUT * 30, **kw):
    kw.setdefault('stdin', subprocess.DEVNULL)
    kw.setdefault('capture_output', True)
    kw.setdefault('text', True)
    return subprocess.run([str(a) for a in argv], timeout=timeout, **kw)


def package_status():
    proc = run(['dpkg-query', '-W', '-f=${Status}', 'inboxfs'])
    return proc.stdout.strip() if proc.returncode == 0 else ''


def package_installed():
    """Installed, half-installed or with its configuration left: anything
    dpkg still knows of but 'not-installed'."""
    status = package_status()
    return bool(status) and not status.endswith('not-installed')


def require_prerequisites():
    if os.geteuid() != 0:
        pytest.skip('installs a package and mounts: run as root')
    for tool in ('dpkg-buildpackage', 'lintian', 'apt-get', 'systemd-escape',
                 'systemd-sysusers', 'setpriv', 'fusermount3'):
        if not shutil.which(tool):
            pytest.skip(f'{tool} is missing (tools/test installs debhelper and lintian)')
    if not os.path.exists('/dev/fuse'):
        pytest.skip('FUSE is not available (/dev/fuse)')
    if package_installed():
        pytest.skip(f'a package inboxfs is on this machine already ({package_status()}): '
                    'the test never replaces one it did not install')


# ------------------------------------------------------- the unit, by hand

def unit_lines(path):
    """(key, value) of every assignment of a unit file, continuation lines
    joined, comments dropped."""
    lines, pending = [], ''
    with open(path) as f:
        for raw in f:
            line = raw.rstrip('\n')
            if not pending and (not line.strip() or line.lstrip()[:1] in '#;'):
                continue
            if line.endswith('\\'):
                pending += line[:-1] + ' '
                continue
            line, pending = pending + line, ''
            if '=' in line and not line.startswith('['):
                key, value = line.split('=', 1)
                lines.append((key.strip(), value.strip()))
    return lines


def expand_specifiers(value, instance, path):
    return re.sub(r'%([%fi])', lambda m: {'%': '%', 'f': path, 'i': instance}[m.group(1)],
                  value)


def parse_environment(value):
    """Environment=A=b "C=d e": systemd's quoting is shell-like."""
    return dict(word.split('=', 1) for word in shlex.split(value))


def read_environment_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(('#', ';')) and '=' in line:
                key, value = line.split('=', 1)
                env[key.strip()] = ' '.join(shlex.split(value))
    return env


def exec_argv(value, env):
    """An Exec*= line as systemd runs it (systemd.service(5), "Command
    lines"): prefixes dropped, words split as by the shell's quoting, ${VAR}
    (a word, or part of one) replaced by the variable's exact value, one
    argument even when empty or spaced, a word that is exactly $VAR split
    into the variable's words (none when empty), and $$ a literal $."""
    while value[:1] in ('-', '@', '+', '!', ':'):
        value = value[1:]
    argv = []
    for word in shlex.split(value):
        whole = re.fullmatch(r'\$(\w+)', word)
        if whole:
            argv += shlex.split(env.get(whole.group(1), ''))
            continue
        argv.append(re.sub(r'\$\$|\$\{(\w+)\}',
                           lambda m: '$' if m.group(0) == '$$' else env.get(m.group(1), ''),
                           word))
    return argv


class Unit:
    """An installed template unit, instanced for PATH."""

    def __init__(self, name, path):
        self.file = next((os.path.join(d, name) for d in UNITDIRS
                          if os.path.isfile(os.path.join(d, name))), None)
        assert self.file, f'{name} is not installed in {UNITDIRS}'
        self.instance = run(['systemd-escape', '--path', path]).stdout.strip()
        self.path = path
        self.lines = [(k, expand_specifiers(v, self.instance, path))
                      for k, v in unit_lines(self.file)]
        self.env = {}
        for key, value in self.lines:
            if key == 'Environment':
                self.env.update(parse_environment(value))
            elif key == 'EnvironmentFile':
                optional = value.startswith('-')
                envfile = value.lstrip('-')
                if os.path.exists(envfile):
                    self.env.update(read_environment_file(envfile))
                else:
                    assert optional, f'{self.file}: {envfile} is missing'

    def commands(self, key, **extra):
        env = dict(self.env, **extra)
        return [exec_argv(v, env) for k, v in self.lines if k == key]


# ------------------------------------------------------------------ checks

def tree(root):
    """Every path under ROOT with its type, mode, owner and content."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            content = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, 'rb') as f:
                    content = f.read()
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, content)
    return found


def deb_paths(deb):
    """The regular files and links a .deb installs (not its directories)."""
    proc = run(['dpkg-deb', '--contents', deb])
    assert proc.returncode == 0, proc.stderr
    paths = []
    for line in proc.stdout.splitlines():
        perms, path = line.split()[0], line.split(None, 5)[5].split(' -> ')[0]
        if not perms.startswith('d'):
            paths.append(path[1:] if path.startswith('./') else path)
    return [p if p.startswith('/') else '/' + p for p in paths]


def as_client(user, command, *args):
    """Run a shell command as USER (a client of the mount: not an observer)."""
    return run(['setpriv', '--reuid', user, '--regid', user, '--clear-groups', '--',
                '/bin/sh', '-c', command, 'sh', *args], timeout=TIMEOUT * 3)


def build_package(base):
    """dpkg-buildpackage -us -uc -b of a copy of the tree in BASE (never
    in the source tree): (the .deb, the .changes)."""
    source = copy_source(os.path.join(base, 'inboxfs'))
    proc = run(['dpkg-buildpackage', '-us', '-uc', '-b'], cwd=source, timeout=900)
    assert proc.returncode == 0, \
        f'dpkg-buildpackage failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}'
    debs = [f for f in os.listdir(base) if re.fullmatch(r'inboxfs_[^_]+_[^_]+\.deb', f)]
    changes = [f for f in os.listdir(base) if f.endswith('.changes')]
    assert len(debs) == 1 and len(changes) == 1, os.listdir(base)
    return os.path.join(base, debs[0]), os.path.join(base, changes[0])


@pytest.fixture
def package_build():
    require_prerequisites()
    base = tempfile.mkdtemp(prefix='inboxfs-package-')
    try:
        yield build_package(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def installed(package_build):
    """The package, installed by apt; purged whatever happens."""
    deb, _ = package_build
    try:
        yield deb
    finally:
        if package_installed():
            proc = run(APT + ['purge', 'inboxfs'], env=APT_ENV, timeout=600)
            assert proc.returncode == 0, f'apt-get purge failed:\n{proc.stdout}{proc.stderr}'


class Served:
    """The instance of inboxfs@.service for INBOX, its commands run by
    hand: ExecStartPre, ExecStart (the daemon), ExecStartPost (the wait for
    the mount), and on stop ExecStopPost."""

    def __init__(self, inbox):
        self.unit = Unit('inboxfs@.service', inbox)
        self.mountpoint = self.unit.env['INBOXFS_MOUNTPOINT']
        self.daemon = None
        self.log = os.path.join(os.path.dirname(inbox), 'daemon.log')

    def start(self):
        for argv in self.unit.commands('ExecStartPre'):
            proc = run(argv, timeout=TIMEOUT * 3)
            assert proc.returncode == 0, (argv, proc.stderr)
        (argv,) = self.unit.commands('ExecStart')
        assert argv[0] == '/usr/sbin/inboxfs', argv
        with open(self.log, 'wb') as log:
            self.daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        for argv in self.unit.commands('ExecStartPost', MAINPID=str(self.daemon.pid)):
            proc = run(argv, timeout=TIMEOUT * 6)
            assert proc.returncode == 0, (argv, proc.stderr, helpers.read_log(self.log))

    def stop(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=TIMEOUT * 3)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(timeout=TIMEOUT * 3)
        for argv in self.unit.commands('ExecStopPost'):
            run(argv, timeout=TIMEOUT * 3)
        return self.daemon.returncode if self.daemon else None


class UringParameter:
    """The fuse module's enable_uring, which the unit's start sets: the
    machine's, so put back as it was after the test."""
    PATH = '/sys/module/fuse/parameters/enable_uring'

    def __init__(self):
        self.old = self.get() if os.path.exists(self.PATH) else None
        self.present = self.old is not None and os.access(self.PATH, os.W_OK)

    def get(self):
        with open(self.PATH) as f:
            return f.read().strip()

    def set(self, value):
        with open(self.PATH, 'w') as f:
            f.write(value)

    def restore(self):
        if self.present:
            self.set('1' if self.old in ('Y', '1') else '0')


def test_package_builds_installs_serves_and_purges_to_nothing(installed, package_build):
    deb, changes = package_build
    account = helpers.SMB_FORCE_USER

    # lintian: no error, no warning the packaging does not explain.
    proc = run(['lintian', '--fail-on', 'error,warning', changes], timeout=600)
    assert proc.returncode == 0, f'lintian:\n{proc.stdout}{proc.stderr}'

    proc = run(APT + ['install', os.path.abspath(deb)], env=APT_ENV, timeout=900)
    assert proc.returncode == 0, f'apt-get install failed:\n{proc.stdout}{proc.stderr}'
    assert package_status() == 'install ok installed'

    # What it holds.
    listed = set(run(['dpkg', '-L', 'inboxfs']).stdout.split())
    for path in ('/usr/sbin/inboxfs', '/usr/sbin/inboxfs-quarantine', '/usr/bin/inboxfs-stat',
                 '/usr/share/man/man8/inboxfs.8.gz', '/usr/share/man/man8/inboxfs-quarantine.8.gz',
                 '/usr/share/man/man1/inboxfs-stat.1.gz', '/usr/lib/sysusers.d/inboxfs.conf',
                 '/etc/default/inboxfs', '/usr/share/doc/inboxfs/smb.conf.example',
                 '/usr/share/doc/inboxfs/inboxfs-consumer.conf.example',
                 '/usr/share/doc/inboxfs/smbd.service.d/inboxfs.conf',
                 '/etc/modprobe.d/inboxfs.conf'):
        assert path in listed, f'{path} is not in the package'
    # FUSE over io_uring offered when the fuse module loads.
    with open('/etc/modprobe.d/inboxfs.conf') as f:
        assert [line.split() for line in f if line.strip() and not line.startswith('#')] == \
            [['options', 'fuse', 'enable_uring=1']]
    for unit in ('inboxfs@.service', 'inboxfs-purge@.service', 'inboxfs-purge@.timer'):
        assert any(os.path.join(d, unit) in listed for d in UNITDIRS), f'{unit} is missing'
    version = run(['/usr/sbin/inboxfs', '--version'])
    assert version.returncode == 0 and version.stdout.startswith('inboxfs '), version

    # The account: the postinst made it (or found it), and the package's
    # sysusers.d entry alone makes it on an empty root.
    pw = pwd.getpwnam(account)
    assert pw.pw_shell == '/usr/sbin/nologin'
    with tempfile.TemporaryDirectory(prefix='inboxfs-sysusers-') as root:
        os.mkdir(os.path.join(root, 'etc'))
        proc = run(['systemd-sysusers', f'--root={root}', '/usr/lib/sysusers.d/inboxfs.conf'])
        assert proc.returncode == 0, proc.stderr
        with open(os.path.join(root, 'etc', 'passwd')) as f:
            entry = [line for line in f if line.startswith(account + ':')]
        assert len(entry) == 1 and entry[0].rstrip().endswith(':/nonexistent:/usr/sbin/nologin'), \
            entry

    # A scratch inbox, laid out as README's deployment: the client account
    # writes it through its group. Served by the installed unit's commands.
    base = make_base_dir('inboxfs-pkginbox-')
    inbox = os.path.join(base, 'inbox')
    os.mkdir(inbox)
    os.chown(inbox, 0, grp.getgrnam(account).gr_gid)
    os.chmod(inbox, 0o2770)
    helpers.write_file(os.path.join(inbox, 'earlier.txt'), b'already there\n')
    served = Served(inbox)
    uring = UringParameter()
    try:
        assert served.mountpoint == inbox + '.drop'
        # The unit's start offers FUSE over io_uring (enable_uring=1) for a
        # fuse module loaded before it, except with uring=no; the daemon
        # then serves over it and says so.
        if uring.present:
            uring.set('0')
            for argv in served.unit.commands('ExecStartPre',
                                             INBOXFS_OPTIONS='observers=root,uring=no'):
                run(argv, timeout=TIMEOUT * 3)
            assert uring.get() == 'N'
        served.start()
        assert os.stat(served.mountpoint).st_dev != os.stat(inbox).st_dev
        # (logged at the INIT reply, which may follow the mount's appearance)
        started = wait_until(lambda: re.search(r'transport: .*', helpers.read_log(served.log)),
                             timeout=TIMEOUT * 3, what='the transport line').group(0)
        if uring.present:
            assert uring.get() == 'Y'
            assert re.search(r'transport: io_uring, \d+ queues', started), started
        else:
            assert 'transport: /dev/fuse' in started, started

        # Two clients drop one name: both delivered, the second under a
        # unique name.
        for text in ('first', 'second'):
            proc = as_client(account, 'printf %s "$1" > "$2"', text,
                             os.path.join(served.mountpoint, 'MSG.TXT'))
            assert proc.returncode == 0, proc.stderr
        delivered = {n: helpers.read_file(os.path.join(inbox, n)) for n in os.listdir(inbox)
                     if n not in ('.inboxfs', 'earlier.txt')}
        assert sorted(delivered.values()) == [b'first', b'second'], delivered
        assert delivered.get('MSG.TXT') == b'first'
        assert any(re.fullmatch(r'MSG~[0-9A-Z]{12}\.TXT', n) for n in delivered), delivered

        # The installed tools on it.
        stat = run(['/usr/bin/inboxfs-stat', '--json', served.mountpoint])
        assert stat.returncode == 0, stat.stderr
        assert json.loads(stat.stdout)['drops'] == 2, stat.stdout
        listing = run(['/usr/sbin/inboxfs-quarantine', 'list', inbox])
        assert listing.returncode == 0, listing.stderr

        # The purge timer's service, by hand: the default age works, an
        # empty one is refused in one line.
        purge = Unit('inboxfs-purge@.service', inbox)
        (argv,) = purge.commands('ExecStart')
        proc = run(argv)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        (argv,) = purge.commands('ExecStart', INBOXFS_PURGE_DAYS='')
        proc = run(argv)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, \
            (argv, proc.stderr)
        enabled = glob.glob('/etc/systemd/system/*.wants/inboxfs*')
        assert not enabled, f'the package enabled {enabled}'
    finally:
        status = served.stop()
        uring.restore()
    assert status == 0, helpers.read_log(served.log)
    assert not helpers.mountinfo(served.mountpoint)

    # Purge: nothing of the package is left; the inbox, its staging
    # directory and the mountpoint are untouched; the account stays.
    paths = deb_paths(deb)
    before = tree(inbox)
    proc = run(APT + ['purge', 'inboxfs'], env=APT_ENV, timeout=600)
    assert proc.returncode == 0, f'apt-get purge failed:\n{proc.stdout}{proc.stderr}'
    assert not package_installed(), package_status()
    left = [p for p in paths if os.path.lexists(p)]
    assert not left, f'left after purge: {left}'
    assert not [f for f in os.listdir('/var/lib/dpkg/info') if f.startswith('inboxfs.')]
    assert not os.path.lexists('/usr/share/doc/inboxfs')
    assert tree(inbox) == before
    assert os.path.isdir(served.mountpoint)
    assert pwd.getpwnam(account)
    shutil.rmtree(base)
