"""Deployment (README "Installing"): `meson install` into a DESTDIR puts the
binary, the systemd template unit, the man page and the example smb.conf in
place; the man page renders and documents every option of --help; the unit's
helper commands do what its comments say; and mount(8) mounts type
fuse.inboxfs, from the command line and from an fstab line, through
mount.fuse3.

mount(8) starts its helpers with PATH removed from the environment, and
mount.fuse3 runs `inboxfs` through /bin/sh, which then searches its default
path (/usr/local/sbin:...:/usr/sbin:...). So a PATH given to mount cannot
point it at the built binary: the mount tests run in a private mount
namespace in which the first directory of that default path is replaced by
one holding an `inboxfs` symlink to INBOXFS_BIN. Nothing is installed on the
host, and the test mounts are invisible outside the namespace."""

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

import helpers
from helpers import SOURCE, TIMEOUT, inboxfs_daemons, make_base_dir, wait_until

BUILD = os.environ.get('INBOXFS_BUILD', '')


def run(argv, timeout=TIMEOUT * 6, **kw):
    kw.setdefault('stdin', subprocess.DEVNULL)
    kw.setdefault('capture_output', True)
    kw.setdefault('text', True)
    return subprocess.run([str(a) for a in argv], timeout=timeout, **kw)


def need_tools(*tools):
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f'{tool} is missing')


def meson_introspect(build, what):
    proc = run(['meson', 'introspect', what, build])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def build_options(build):
    return {o['name']: o['value'] for o in meson_introspect(build, '--buildoptions')}


def find_installed(installed, kind):
    """The install path (without DESTDIR) of one of the four deliverables,
    from `meson introspect --installed` (source or build path -> install
    path), whatever the prefix."""
    matches = {
        'binary': lambda src, dst: os.path.basename(dst) == 'inboxfs'
        and src.endswith(os.path.join('fs', 'inboxfs')),
        'unit': lambda src, dst: os.path.basename(dst) == 'inboxfs@.service',
        'man': lambda src, dst: os.path.basename(dst) == 'inboxfs.8',
        'smb.conf': lambda src, dst: os.path.basename(dst) == 'smb.conf.example',
    }[kind]
    found = [dst for src, dst in installed.items() if matches(src, dst)]
    assert len(found) == 1, f'{kind}: expected one installed file, found {found}'
    return found[0]


class Install:
    """A `meson install --destdir` of the build under test."""

    def __init__(self, build, destdir):
        self.build = build
        self.destdir = destdir
        self.options = build_options(build)
        self.prefix = self.options['prefix']
        self.installed = meson_introspect(build, '--installed')
        self.log = ''

    def target(self, kind):
        """Where KIND is installed, without DESTDIR."""
        return find_installed(self.installed, kind)

    def path(self, kind):
        """Where KIND is in the DESTDIR."""
        return self.destdir + self.target(kind)


@pytest.fixture(scope='module')
def install():
    if not BUILD or not os.path.isdir(os.path.join(BUILD, 'meson-private')):
        pytest.skip('INBOXFS_BUILD is not a meson build directory')
    need_tools('meson')
    destdir = tempfile.mkdtemp(prefix='inboxfs-destdir-')
    # --no-rebuild: install what was built (meson test builds first), never
    # rebuild a tree that other runs may be using.
    proc = run(['meson', 'install', '-C', BUILD, '--destdir', destdir, '--no-rebuild'])
    assert proc.returncode == 0, f'meson install failed:\n{proc.stdout}{proc.stderr}'
    inst = Install(BUILD, destdir)
    inst.log = proc.stdout
    yield inst
    shutil.rmtree(destdir, ignore_errors=True)


# ------------------------------------------------------------ installed files

def test_install_puts_binary_unit_man_page_and_smb_conf_in_place(install):
    opts = install.options
    prefix = install.prefix

    binary = install.target('binary')
    assert binary == os.path.join(prefix, opts['sbindir'], 'inboxfs')
    assert os.access(install.path('binary'), os.X_OK)
    proc = run([install.path('binary'), '--version'])
    assert proc.returncode == 0 and proc.stdout.startswith('inboxfs '), proc

    man = install.target('man')
    assert man == os.path.join(prefix, opts['mandir'], 'man8', 'inboxfs.8')
    with open(install.path('man'), 'rb') as a, \
            open(os.path.join(helpers.SOURCE, 'dist', 'inboxfs.8'), 'rb') as b:
        assert a.read() == b.read()

    unit = install.target('unit')
    assert re.search(r'/lib/systemd/system/inboxfs@\.service$', unit), unit
    with open(install.path('unit')) as f:
        assert '@SBINDIR@' not in f.read()

    example = install.target('smb.conf')
    assert example == os.path.join(prefix, opts['datadir'], 'doc', 'inboxfs',
                                   'smb.conf.example')
    with open(install.path('smb.conf'), 'rb') as a, \
            open(os.path.join(helpers.SOURCE, 'dist', 'samba', 'smb.conf'), 'rb') as b:
        assert a.read() == b.read()

    for kind in ('binary', 'unit', 'man', 'smb.conf'):
        assert os.path.isfile(install.path(kind)), kind


def test_install_gives_every_command_a_man_page_and_the_samba_pieces(install):
    """Each installed command has its man page; the
    smbd drop-in, the consumer's include and the Samba example (without
    @...@ placeholders) are in the doc directory; the load generator is a
    test tool, not installed by default."""
    destdir = install.destdir
    files = [dst for dst in install.installed.values()]
    commands = [d for d in files if os.path.dirname(d).endswith(('/bin', '/sbin'))]
    names = sorted(os.path.basename(c) for c in commands)
    assert names == ['inboxfs', 'inboxfs-quarantine', 'inboxfs-stat'], names
    pages = {os.path.basename(d) for d in files if re.search(r'/man[18]/', d)}
    for command in commands:
        name = os.path.basename(command)
        section = 8 if command.endswith(f'/sbin/{name}') else 1
        assert f'{name}.{section}' in pages, f'{command} has no man page ({pages})'
        assert os.access(destdir + command, os.X_OK), command
        render_man(destdir + [d for d in files if d.endswith(f'/{name}.{section}')][0])
    if not install.options.get('install_storm'):
        assert 'inbox-storm.1' not in pages

    doc = os.path.dirname(install.target('smb.conf'))
    dropin = os.path.join(doc, 'smbd.service.d', 'inboxfs.conf')
    assert dropin in files, files
    settings = unit_settings(open(destdir + dropin).read())
    # Wants=, not BindsTo=: smbd (and the consumer's share) keeps running
    # through inboxfs's stops and restarts (README "Deploying on an inbox
    # server").
    assert settings[('Unit', 'Wants')] == ['inboxfs@srv-inbox.service']
    assert ('Unit', 'BindsTo') not in settings
    assert settings[('Unit', 'After')] == ['inboxfs@srv-inbox.service']
    assert os.path.join(doc, 'inboxfs-consumer.conf.example') in files
    with open(install.path('smb.conf')) as f:
        example = f.read()
    assert not re.search(r'@[A-Z_]+@', example), re.findall(r'@[A-Z_]+@', example)
    assert 'include = /etc/samba/inboxfs-consumer.%U.conf' in example
    proc = run(['testparm', '-s', '--suppress-prompt', install.path('smb.conf')])
    if proc.returncode != 127:
        assert proc.returncode == 0, proc.stderr
        assert 'found in service section' not in proc.stderr, proc.stderr


def test_install_ships_the_ctdb_example(install):
    """README "Several front-ends": the CTDB event script (executable, a shell
    script sh parses) and the example CTDB configuration and smb.conf lines
    for clustering are installed under the doc directory, as dist/ctdb has
    them (test_ctdb.py runs those)."""
    ctdb = os.path.join(os.path.dirname(install.target('smb.conf')), 'ctdb')
    files = set(install.installed.values())
    want = {'ctdb.conf', 'nodes', 'public_addresses', 'script.options', 'ctdb.tunables',
            'smb-clustering.conf.example', 'events/legacy/50.inboxfs.script'}
    for name in want:
        assert os.path.join(ctdb, name) in files, (name, sorted(files))
    script = install.destdir + os.path.join(ctdb, 'events/legacy/50.inboxfs.script')
    assert os.stat(script).st_mode & 0o777 == 0o755
    assert run(['sh', '-n', script]).returncode == 0
    with open(script) as f, open(os.path.join(SOURCE, 'dist', 'ctdb', 'events', 'legacy',
                                              '50.inboxfs.script')) as g:
        assert f.read() == g.read()
    with open(install.destdir + os.path.join(ctdb, 'smb-clustering.conf.example')) as f:
        lines = f.read()
    for line in ('clustering = yes', 'vfs objects = fileid', 'fileid:algorithm = fsname'):
        assert line in lines


def test_production_build_needs_neither_cmocka_nor_libsmbclient(tmp_path):
    """-Dtests=disabled -Dstorm=disabled: configures without looking for
    either (meson says which dependencies it found)."""
    need_tools('meson')
    build = tmp_path / 'build'
    proc = run(['meson', 'setup', '-Dtests=disabled', '-Dstorm=disabled', build,
                helpers.SOURCE])
    assert proc.returncode == 0, f'{proc.stdout}{proc.stderr}'
    assert not re.search(r'Run-time dependency (cmocka|smbclient)', proc.stdout), proc.stdout
    targets = {t['name'] for t in meson_introspect(build, '--targets')}
    assert 'inboxfs' in targets and 'inbox-storm' not in targets
    assert not any(t.startswith('test_') for t in targets), targets


def test_prefix_usr_installs_where_mount_and_systemd_look(tmp_path):
    """The documented install (`meson setup --prefix=/usr`) puts the binary
    on mount.fuse3's search path and the unit where systemd finds it."""
    need_tools('meson')
    build = tmp_path / 'build'
    proc = run(['meson', 'setup', '--prefix=/usr', build, helpers.SOURCE])
    assert proc.returncode == 0, f'{proc.stdout}{proc.stderr}'
    installed = meson_introspect(build, '--installed')

    assert find_installed(installed, 'binary') == '/usr/sbin/inboxfs'
    assert find_installed(installed, 'man') == '/usr/share/man/man8/inboxfs.8'
    assert (find_installed(installed, 'smb.conf')
            == '/usr/share/doc/inboxfs/smb.conf.example')
    unit = find_installed(installed, 'unit')
    assert unit in ('/lib/systemd/system/inboxfs@.service',
                    '/usr/lib/systemd/system/inboxfs@.service'), unit
    with open(build / 'dist' / 'inboxfs@.service') as f:
        assert unit_exec(f.read(), 'ExecStart')[0] == '/usr/sbin/inboxfs'


# ------------------------------------------------------------------ man page

def render_man(path):
    need_tools('man')
    env = dict(os.environ, MANWIDTH='80', LC_ALL='C.UTF-8')
    for var in ('MANPAGER', 'PAGER', 'MAN_KEEP_FORMATTING', 'MANOPT'):
        env.pop(var, None)
    proc = run(['man', '--warnings', '-l', path], env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def man_sections(text):
    """Rendered man page -> {SECTION: body}."""
    sections, name = {}, None
    for line in text.splitlines():
        if re.match(r'^[A-Z][A-Z ]+$', line):
            name = line.strip()
            sections[name] = ''
        elif name:
            sections[name] += line + '\n'
    return sections


def test_man_page_renders_without_warnings(install):
    proc = render_man(install.path('man'))
    assert proc.stderr == ''
    assert proc.stdout.strip()
    sections = man_sections(proc.stdout)
    for name in ('NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'FSTAB', 'SYSTEMD',
                 'SAMBA', 'FILES', 'EXIT STATUS', 'SEE ALSO'):
        assert sections.get(name, '').strip(), f'section {name} missing or empty'
    if shutil.which('groff'):
        strict = run(['groff', '-man', '-ww', '-z', install.path('man')])
        assert strict.returncode == 0 and strict.stderr == '', strict.stderr


def help_options(text):
    """inboxfs --help -> ({NAME: help text} for each `-o NAME=`,
    [flags such as -f, --help])."""
    named, flags, current = {}, [], None
    for line in text.splitlines():
        m = re.match(r'^\s+-o ([a-z_]+)=\S*\s*(.*)$', line)
        if m:
            current = m.group(1)
            named[current] = m.group(2)
            continue
        m = re.match(r'^\s+(-[A-Za-z](?:, --[a-z-]+)?)\s\s', line)
        if m:
            current = None
            flags += m.group(1).split(', ')
            continue
        if current and line.startswith(' ' * 8):
            named[current] += ' ' + line.strip()
        else:
            current = None
    return named, flags


def man_option_entries(options_text):
    """The OPTIONS section -> {tag line: body}."""
    entries, tag = {}, None
    for line in options_text.splitlines():
        m = re.match(r'^ {7}(-\S.*?)(?:\s{2,}(.*))?$', line)
        if m:
            tag = m.group(1).strip()
            entries[tag] = (m.group(2) or '') + '\n'
        elif tag and line.startswith(' ' * 14):
            entries[tag] += line.strip() + '\n'
        elif line.strip():
            tag = None      # a paragraph after the list
    return entries


def test_man_page_documents_every_option_of_help(install, run_inboxfs):
    proc = run_inboxfs('--help')
    assert proc.returncode == 0, proc.stderr
    named, flags = help_options(proc.stdout)
    assert {'observers', 'staging', 'sync', 'names', 'linger'} <= set(named), named
    assert {'-f', '-d', '-s', '-h', '--help', '-V', '--version'} <= set(flags), flags

    entries = man_option_entries(man_sections(render_man(install.path('man')).stdout)
                                 ['OPTIONS'])
    for name, text in named.items():
        tags = [t for t in entries if t.startswith(f'-o {name}=')]
        assert tags, f'-o {name}= is not in the man page OPTIONS'
        body = ' '.join(entries[tags[0]].split())
        assert 'Default:' in body, f'-o {name}=: no default in the man page'
        # The default --help states must be the one the man page states.
        m = re.search(r'\(default ([^);]+)', text)
        if m:
            assert m.group(1).strip() in body, \
                f'-o {name}=: --help says default {m.group(1)!r}, man page: {body}'
    for flag in flags:
        assert any(re.search(rf'(^|, ){re.escape(flag)}(,|$)', t) for t in entries), \
            f'{flag} is not in the man page OPTIONS'


# ---------------------------------------------------------------- systemd unit

def unit_settings(text):
    """A unit file -> {(section, key): [values in order]}."""
    settings, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('['):
            section = line.strip('[]')
            continue
        key, _, value = line.partition('=')
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def unit_exec(text, key, name=None):
    """The argv of an Exec*= line, with its '-' prefix kept apart:
    ExecStopPost=-/bin/sh -> ['-', '/bin/sh', ...]. Of several lines
    (ExecStartPre=), the one whose words include NAME (the name a
    `sh -c` script is given)."""
    values = unit_settings(text)[('Service', key)]
    if name is not None:
        values = [v for v in values if name in shlex.split(v.lstrip('-'))]
    assert len(values) == 1, values
    value = values[0]
    prefix = []
    if value.startswith('-'):
        prefix, value = ['-'], value[1:]
    return prefix + shlex.split(value)


def expand(argv, path, mainpid=None, mountpoint=None):
    """What systemd would run for instance PATH: specifiers and $$; the
    mountpoint is PATH (an over-mount) unless given."""
    out = []
    for arg in argv:
        arg = arg.replace('%f', path).replace('$$', '$')
        arg = arg.replace('${INBOXFS_MOUNTPOINT}', mountpoint or path)
        if mainpid is not None:
            arg = arg.replace('${MAINPID}', str(mainpid))
        out.append(arg)
    return out


def test_unit_file_settings(install):
    with open(install.path('unit')) as f:
        text = f.read()
    s = unit_settings(text)
    assert s[('Service', 'Type')] == ['simple']
    # Whatever stopped it (a crash, SIGTERM, an unmount), it serves again.
    assert s[('Service', 'Restart')] == ['always']
    assert s[('Service', 'KillMode')] == ['mixed']
    # Well beyond the default drain= (10 s), so SIGKILL never cuts a drain
    # short (the unmount and a durable close's syncs come after it).
    [stop_timeout] = s[('Service', 'TimeoutStopSec')]
    m = re.fullmatch(r'(\d+)s', stop_timeout)
    assert m and int(m.group(1)) >= 2 * 10, stop_timeout
    # Its own descriptor limit (R12), not whatever systemd's default is:
    # one number, soft and hard, within the kernel's default nr_open.
    limit = s[('Service', 'LimitNOFILE')]
    assert len(limit) == 1 and re.fullmatch(r'\d+', limit[0]), limit
    assert 65536 <= int(limit[0]) <= 1 << 20, limit
    assert '-/etc/default/inboxfs' in s[('Service', 'EnvironmentFile')]
    assert 'smbd.service' in ' '.join(s[('Unit', 'Before')]).split()
    assert 'local-fs.target' in ' '.join(s[('Unit', 'After')]).split()
    assert s[('Install', 'WantedBy')] == ['multi-user.target']
    # inboxfs refuses an empty -o: the unit has a default.
    assert any(re.fullmatch(r'INBOXFS_OPTIONS=\S+', e)
               for e in s[('Service', 'Environment')])
    assert 'recover' in text   # the comment on recovery at every start

    # A separate mountpoint, INBOX.drop unless the administrator says
    # otherwise (an over-mount: INBOXFS_MOUNTPOINT=INBOX).
    assert 'INBOXFS_MOUNTPOINT=%f.drop' in s[('Service', 'Environment')]
    assert unit_exec(text, 'ExecStart') == [
        install.target('binary'), '-f', '-o', '${INBOXFS_OPTIONS}', '%f',
        '${INBOXFS_MOUNTPOINT}']
    stop = unit_exec(text, 'ExecStopPost')
    assert stop[0] == '-' and 'fusermount3 -uz' in ' '.join(stop)
    assert 'SERVICE_RESULT' in ' '.join(stop)          # says why it stopped
    # Hardening that keeps the mount visible to smbd: no mount namespace.
    assert s[('Service', 'NoNewPrivileges')] == ['yes']
    caps = s[('Service', 'CapabilityBoundingSet')][0].split()
    assert 'CAP_SYS_ADMIN' in caps and 'CAP_NET_ADMIN' not in caps
    # The read lease on a file found in the bare mountpoint: without
    # it, a start with such a file owned by the client account refuses.
    assert 'CAP_LEASE' in caps
    for namespaced in ('PrivateTmp', 'ProtectSystem', 'ProtectHome', 'PrivateMounts',
                       'ProtectKernelTunables', 'ReadOnlyPaths', 'PrivateDevices'):
        assert ('Service', namespaced) not in s, namespaced


def test_unit_start_pre_makes_a_read_only_mountpoint(install, tmp_path):
    with open(install.path('unit')) as f:
        pre = unit_exec(f.read(), 'ExecStartPre', 'inboxfs-mountpoint')
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    mnt = str(inbox) + '.drop'
    proc = run(expand(pre, str(inbox), mountpoint=mnt), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    st = os.stat(mnt)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o555)
    # An existing mountpoint (or a stale mount there) is left alone.
    os.chmod(mnt, 0o755)
    assert run(expand(pre, str(inbox), mountpoint=mnt), timeout=TIMEOUT).returncode == 0
    assert os.stat(mnt).st_mode & 0o7777 == 0o755


def test_unit_start_pre_offers_fuse_over_io_uring(install, tmp_path):
    """The unit's start sets the fuse module's enable_uring to 1 (played on
    a file standing in for the parameter), not with uring=no among the
    options, and starts all the same where the kernel has no parameter."""
    with open(install.path('unit')) as f:
        text = f.read()
    prefix, *pre = unit_exec(text, 'ExecStartPre', 'inboxfs-uring')
    assert prefix == '-', 'a kernel without the parameter must still start the unit'
    param = '/sys/module/fuse/parameters/enable_uring'
    assert any(param in word for word in pre), pre
    fake = tmp_path / 'enable_uring'

    def start(options, where):
        argv = [w.replace(param, str(where)).replace('$$', '$')
                .replace('${INBOXFS_OPTIONS}', options) for w in pre]
        return run(argv, timeout=TIMEOUT)

    for options, expected in (('observers=root', '1'), ('observers=root,xattr=no', '1'),
                              ('uring=no', 'N'), ('observers=root,uring=no,sync=close', 'N')):
        fake.write_text('N\n')
        proc = start(options, fake)
        assert proc.returncode == 0, proc.stderr
        assert fake.read_text().strip() == expected, options
    proc = start('observers=root', tmp_path / 'no-such-module' / 'enable_uring')
    assert proc.returncode == 0, proc.stderr


def test_unit_file_passes_systemd_analyze_verify(install, tmp_path):
    need_tools('systemd-analyze')
    with open(install.path('unit')) as f:
        text = f.read()
    # An instance (a template alone cannot be verified), its ExecStart
    # pointing at the binary in the DESTDIR (the host has none installed).
    binary = install.target('binary')
    text = text.replace(f'ExecStart={binary} ', f'ExecStart={install.path("binary")} ')
    assert install.path('binary') in text
    instance = tmp_path / 'inboxfs@srv-inbox.service'
    instance.write_text(text)
    proc = run(['systemd-analyze', 'verify', '--man=no', instance])
    assert proc.returncode == 0 and proc.stdout + proc.stderr == '', \
        proc.stdout + proc.stderr


def test_unit_start_post_waits_for_the_mount(install, mount_inboxfs):
    with open(install.path('unit')) as f:
        wait = unit_exec(f.read(), 'ExecStartPost')

    # The daemon is gone and nothing is mounted: give up at once.
    base = make_base_dir('inboxfs-unit-')
    try:
        with open('/proc/sys/kernel/pid_max') as f:
            dead = int(f.read()) + 1    # no such process
        proc = run(expand(wait, base, dead), timeout=TIMEOUT)
        assert proc.returncode != 0
    finally:
        shutil.rmtree(base, ignore_errors=True)

    # What ExecStart runs (inboxfs -f -o observers=root INBOX INBOX): the
    # start is complete once the mount is there.
    mount = mount_inboxfs(overmount=True, observers='root', wait=False)
    proc = run(expand(wait, mount.inbox, mount.run.proc.pid), timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    assert [m[1] for m in helpers.mountinfo(mount.inbox)][-1] == 'fuse.inboxfs'


def test_unit_stop_post_removes_a_stale_mount_only(install, mount_inboxfs, tmp_path):
    need_tools('unshare', 'findmnt')
    with open(install.path('unit')) as f:
        stop = unit_exec(f.read(), 'ExecStopPost')[1:]   # without the '-'

    mount = mount_inboxfs(overmount=True, observers='root')
    mount.crash()
    assert any(m[1] == 'fuse.inboxfs' for m in helpers.mountinfo(mount.inbox))
    proc = run(expand(stop, mount.inbox), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: not helpers.mountinfo(mount.inbox), what='stale mount removed')

    # An inbox that is a volume of its own stays mounted (in a private mount
    # namespace: a tmpfs standing in for the volume).
    vol = tmp_path / 'volume'
    vol.mkdir()
    script = ('mount -t tmpfs inboxfs-test "$1" || exit 2; shift; "$@" || exit 3; '
              'findmnt --types tmpfs --mountpoint "$VOLUME" >/dev/null || exit 4')
    proc = run(['unshare', '--mount', '--propagation', 'private', '--',
                'sh', '-c', script, 'sh', vol] + expand(stop, str(vol)),
               env=dict(os.environ, VOLUME=str(vol)), timeout=TIMEOUT)
    assert proc.returncode == 0, f'status {proc.returncode}: {proc.stderr}'


# ------------------------------------------------------------------ mount(8)

# Run inside the namespace: detach the copies of other FUSE mounts (a copy
# would keep that filesystem alive, so its daemon would not exit when its
# owner unmounts it), bind SHADOW over TARGET, then live until stdin closes.
HOLDER = r'''
import ctypes, re, sys
libc = ctypes.CDLL(None, use_errno=True)
shadow, target = sys.argv[1:3]
points = []
for line in open('/proc/self/mountinfo'):
    left, _, right = line.partition(' - ')
    fstype = right.split()[0]
    if fstype in ('fuse', 'fuseblk') or fstype.startswith('fuse.'):
        points.append(re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)),
                             left.split()[4]))
for point in reversed(points):
    libc.umount2(point.encode(), 2)                      # MNT_DETACH
if libc.mount(shadow.encode(), target.encode(), None, 4096, None) != 0:   # MS_BIND
    sys.exit('bind mount failed: errno %d' % ctypes.get_errno())
print('ready', flush=True)
sys.stdin.read()
'''


def shell_default_path():
    """The search path of /bin/sh without PATH: what mount.fuse3's shell
    uses, since mount(8) drops PATH from its helpers' environment."""
    proc = run(['env', '-i', '/bin/sh', '-c', 'echo "$PATH"'])
    return [d for d in proc.stdout.strip().split(':') if d]


class Namespace:
    """A private mount namespace in which `inboxfs` resolves to INBOXFS_BIN
    for mount.fuse3. run() runs a command inside it."""

    def __init__(self, base):
        path = shell_default_path()
        dirs = [d for d in path if os.path.isdir(d)]
        if not dirs:
            pytest.skip(f'no directory of /bin/sh default PATH {path} exists')
        self.target = dirs[0]
        # The shadow keeps the directory's other entries.
        self.shadow = os.path.join(base, 'sbin')
        os.mkdir(self.shadow)
        for name in os.listdir(self.target):
            if name != 'inboxfs':
                os.symlink(os.path.join(self.target, name), os.path.join(self.shadow, name))
        os.symlink(os.path.realpath(helpers.INBOXFS_BIN),
                   os.path.join(self.shadow, 'inboxfs'))
        self.mountpoints = []
        self.holder = subprocess.Popen(
            ['unshare', '--mount', '--propagation', 'private', '--',
             sys.executable, '-c', HOLDER, self.shadow, self.target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.holder.stdout], [], [], TIMEOUT)
        line = self.holder.stdout.readline() if ready else b''
        if line != b'ready\n':
            self.close()
            raise AssertionError(f'mount namespace not set up: {line!r} '
                                 f'{self.holder.stderr.read()!r}')

    def run(self, argv, **kw):
        return run(['nsenter', f'--mount=/proc/{self.holder.pid}/ns/mnt', '--']
                   + list(argv), **kw)

    def mountinfo(self, path):
        """(fstype, source) of the mounts at PATH inside the namespace."""
        return [(m.fstype, m.source) for m in helpers.mounts(self.holder.pid)
                if m.point == path]

    def close(self):
        """Stop what is left: daemons of our mount points (ours: their paths
        are fresh temporary directories), then the namespace."""
        leftovers = [pid for mnt in self.mountpoints for pid in inboxfs_daemons(mnt)]
        if leftovers and self.holder.poll() is None:
            for mnt in self.mountpoints:
                self.run(['umount', '-l', mnt], timeout=TIMEOUT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for mnt in self.mountpoints:
                for pid in inboxfs_daemons(mnt):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            try:
                wait_until(lambda: not any(inboxfs_daemons(m) for m in self.mountpoints),
                           TIMEOUT, what='leftover daemons to exit')
                break
            except TimeoutError:
                continue
        self.holder.stdin.close()
        try:
            self.holder.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait()
        self.holder.stdout.close()
        self.holder.stderr.close()
        return leftovers


@pytest.fixture
def namespace():
    reason = helpers.fuse_prerequisites()
    if reason:
        pytest.skip(reason)
    need_tools('unshare', 'nsenter')
    if not (shutil.which('mount.fuse3') or os.path.exists('/sbin/mount.fuse3')):
        pytest.skip('mount.fuse3 is missing (apt-get install fuse3)')
    base = make_base_dir('inboxfs-mount-')
    ns = Namespace(base)
    ns.base = base
    yield ns
    leftovers = ns.close()
    if not helpers.mounted_under(base):
        shutil.rmtree(base, ignore_errors=True)
    assert not leftovers, f'inboxfs daemons left running: {leftovers}'


def check_served_by_mount(ns, inbox, mnt):
    """The mount at MNT is inboxfs over INBOX, run by mount.fuse3 from the
    built binary, and a file written through it as root lands in INBOX."""
    assert ns.mountinfo(mnt)[-1] == ('fuse.inboxfs', inbox), ns.mountinfo(mnt)
    pids = inboxfs_daemons(mnt)
    assert len(pids) == 1, pids
    assert os.path.realpath(f'/proc/{pids[0]}/exe') == os.path.realpath(helpers.INBOXFS_BIN)

    payload = os.urandom(16).hex()
    proc = ns.run(['sh', '-c', 'set -C; printf %s "$2" > "$1"', 'sh',
                   os.path.join(mnt, 'Q7WX2K9A.SVF'), payload])
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(inbox, 'Q7WX2K9A.SVF')) as f:   # the host's view: INBOX itself
        assert f.read() == payload
    return pids[0]


def wait_gone(pid, mnt):
    wait_until(lambda: pid not in inboxfs_daemons(mnt), TIMEOUT,
               what=f'inboxfs {pid} to exit after the unmount')


def test_mount_type_fuse_inboxfs(namespace):
    inbox = os.path.join(namespace.base, 'inbox')
    mnt = os.path.join(namespace.base, 'mnt')
    os.mkdir(inbox)
    os.mkdir(mnt)
    namespace.mountpoints.append(mnt)

    proc = namespace.run(['mount', '-t', 'fuse.inboxfs', inbox, mnt, '-o', 'observers=root'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pid = check_served_by_mount(namespace, inbox, mnt)

    proc = namespace.run(['fusermount3', '-u', mnt])
    assert proc.returncode == 0, proc.stderr
    wait_gone(pid, mnt)
    assert namespace.mountinfo(mnt) == []
    assert not helpers.mountinfo(mnt)   # never visible outside the namespace


def test_mount_from_an_fstab_line(namespace):
    """An over-mount, as the man page shows it, on a path with a space (fstab
    writes it \\040), with the options an fstab line typically carries."""
    inbox = os.path.join(namespace.base, 'in box')
    os.mkdir(inbox)
    namespace.mountpoints.append(inbox)
    field = inbox.replace(' ', r'\040')
    fstab = os.path.join(namespace.base, 'fstab')
    with open(fstab, 'w') as f:
        f.write('# inboxfs test fstab\n'
                f'{field} {field} fuse.inboxfs '
                'observers=root,sync=close,noatime,nofail,_netdev 0 0\n')

    proc = namespace.run(['mount', '-T', fstab, inbox])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pid = check_served_by_mount(namespace, inbox, inbox)
    # Observers see the inbox, but never the staging directory.
    proc = namespace.run(['ls', '-A', inbox])
    listing = proc.stdout.split()
    assert 'Q7WX2K9A.SVF' in listing and '.inboxfs' not in listing, listing
    assert os.path.isdir(os.path.join(inbox, '.inboxfs'))

    proc = namespace.run(['umount', inbox])
    assert proc.returncode == 0, proc.stderr
    wait_gone(pid, inbox)
    assert namespace.mountinfo(inbox) == []


def test_fstab_examples_are_nosuid_nodev_and_name_accounts_the_steps_create():
    """README "Options" (fstab): every fstab line README.md and inboxfs(8)
    show mounts nosuid,nodev (mount.fuse3 mounts without them unless told),
    and every observer it names is root or an account README's steps
    create."""
    with open(os.path.join(helpers.SOURCE, 'README.md')) as f:
        readme = f.read()
    with open(os.path.join(helpers.SOURCE, 'dist', 'inboxfs.8')) as f:
        man = f.read().replace('\\-', '-')
    # A useradd's last word, within a code span (which may wrap) or a line.
    created = set(re.findall(r'useradd\b[^`]*?\s([a-z][a-z0-9-]*)\s*(?:`|$)', readme, re.M))
    for doc, text in (('README.md', readme), ('inboxfs.8', man)):
        lines = re.findall(r'^\s*(\S+)\s+(\S+)\s+fuse\.inboxfs\s+(\S+)\s+\d\s+\d\s*$', text, re.M)
        assert lines, f'{doc} shows no fstab line'
        for _, _, options in lines:
            opts = options.split(',')
            assert 'nosuid' in opts and 'nodev' in opts, f'{doc}: {options}'
            for opt in opts:
                if opt.startswith('observers='):
                    for who in opt.split('=', 1)[1].split(':'):
                        if who != 'root' and not who.startswith('@') and not who.isdigit():
                            assert who in created, \
                                f'{doc}: observer {who} is no account README creates ({created})'
