"""Clustered Samba (several front-ends): two CTDB nodes on this machine,
each in network, mount and UTS namespaces of its own (one long-lived
`unshare` process holds them; every command of the node enters all three
with nsenter), on a bridge the test makes with private addresses on its
own interfaces only. A GlusterFS volume (a glusterd of our own, its brick
on the bridge's address) is the cluster filesystem: each node mounts it,
from inside its namespace, at one common path, so that the CTDB cluster
lock, INBOX and inboxfs's mount source agree on both nodes. On each node:
inboxfs over the volume's inbox, ctdbd with the shipped configuration
(dist/ctdb: ctdb.conf, nodes, public_addresses, 50.inboxfs.script,
10.interface.script moving the public addresses with `ip addr`), and smbd
with `clustering = yes` exporting that node's inboxfs mount with the
shipped share settings (dist/samba/smb.conf) plus dist/ctdb/smb.conf. Clients
(tools/inbox-storm) use the public addresses; the inbox is checked by
content through a GlusterFS mount of the host's own.

Killing "every process of a node" kills every process in its network
namespace, the holder included: its mounts go with it, as in a reboot.

Teardown runs whatever happened: every process of each node by pid
(those in its network namespace), the host's mount, the volume, glusterd,
the bridge and veth pairs."""

import os
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

import helpers
from helpers import (SMB_FORCE_USER, SMB_PASSWORD, SMB_USER, SOURCE, TIMEOUT, staged,
                     staging_areas, wait_until)
from test_gluster import (Gluster, _assert_exactly_once, _gluster_prerequisites,
                          _our_processes, _run, _summary)

BUILD = os.environ.get('INBOXFS_BUILD', '')
BIN = os.environ.get('INBOXFS_BIN', '')
STORM = os.path.join(BUILD, 'tools', 'inbox-storm') if BUILD else ''
DIST = os.path.join(SOURCE, 'dist', 'ctdb')
SMB_PORT = 445          # inside each node's namespace: its own port space


def _prerequisites():
    for tool in ('ctdbd', 'ctdb', 'ip', 'nsenter', 'unshare', 'smbd', 'pdbedit'):
        if not shutil.which(tool):
            return f'{tool} is missing (apt-get install ctdb samba iproute2 util-linux)'
    if not STORM or not os.access(STORM, os.X_OK):
        return 'INBOXFS_BUILD/tools/inbox-storm is not built'
    reason = _gluster_prerequisites()
    if reason:
        return reason
    probe = subprocess.run(['unshare', '--net', '--mount', '--uts', 'true'],
                           capture_output=True, text=True, timeout=TIMEOUT)
    if probe.returncode != 0:
        return f'cannot make namespaces here: {probe.stderr.strip()}'
    return None


def _netns(pid):
    try:
        return os.readlink(f'/proc/{pid}/ns/net')
    except OSError:
        return None


class Node:
    """One node: its namespaces' holder, its directories, its daemons."""

    def __init__(self, cluster, n):
        self.cluster = cluster
        self.n = n
        self.dir = os.path.join(cluster.base, f'node{n}')
        self.etc = os.path.join(self.dir, 'etc-ctdb')
        self.var = os.path.join(self.dir, 'var-ctdb')
        self.samba = os.path.join(self.dir, 'samba')
        self.address = cluster.address(10 + n)
        self.public = cluster.address(100 + n)
        self.veth_host = f'{cluster.tag}h{n}'
        self.holder = None
        self.ns = None
        self.procs = {}         # name: Popen
        self.dead = False

    # -- namespaces

    def start_holder(self):
        os.makedirs(self.dir)
        self.holder = subprocess.Popen(
            ['unshare', '--net', '--mount', '--uts', '--propagation', 'private',
             'sleep', 'infinity'], stdin=subprocess.DEVNULL, start_new_session=True)
        mine = _netns(os.getpid())
        self.ns = wait_until(lambda: (_netns(self.holder.pid) != mine
                                      and _netns(self.holder.pid)), what='the node namespace')

    def argv(self, cmd):
        return ['nsenter', '-t', str(self.holder.pid), '-n', '-m', '-u', '--'] + list(cmd)

    def run(self, cmd, check=True, timeout=TIMEOUT * 6):
        return _run(self.argv(cmd), check=check, timeout=timeout)

    def popen(self, name, cmd, **kw):
        log = open(os.path.join(self.dir, f'{name}.log'), 'ab')
        # Its own session: smbd signals its process group when it exits.
        proc = subprocess.Popen(self.argv(cmd), stdin=kw.pop('stdin', subprocess.DEVNULL),
                                stdout=log, stderr=subprocess.STDOUT, cwd='/',
                                start_new_session=True, **kw)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name):
        return helpers.read_log(os.path.join(self.dir, f'{name}.log'))

    def pids(self):
        """Every process in the node's network namespace."""
        return [pid for pid in helpers.processes() if self.ns and _netns(pid) == self.ns]

    # -- set-up

    def setup_network(self):
        c = self.cluster
        inner = f'{c.tag}n{self.n}'
        _run(['ip', 'link', 'add', self.veth_host, 'type', 'veth', 'peer', 'name', inner])
        _run(['ip', 'link', 'set', self.veth_host, 'master', c.bridge, 'up'])
        _run(['ip', 'link', 'set', inner, 'netns', str(self.holder.pid)])
        self.run(['ip', 'link', 'set', inner, 'name', 'ibx0'])
        self.run(['ip', 'link', 'set', 'lo', 'up'])
        self.run(['ip', 'addr', 'add', f'{self.address}/24', 'dev', 'ibx0'])
        self.run(['ip', 'link', 'set', 'ibx0', 'up'])
        self.run(['hostname', f'inboxnode{self.n}'])

    def setup_ctdb(self):
        """/etc/ctdb, /run and /var/lib/ctdb of its own (bind mounts in its
        mount namespace), the shipped configuration with our addresses."""
        c = self.cluster
        shutil.copytree('/etc/ctdb', self.etc, symlinks=True)
        for sub in ('persistent', 'state', 'volatile'):
            os.makedirs(os.path.join(self.var, sub))
        with open(os.path.join(DIST, 'ctdb.conf')) as f:
            conf = f.read()
        conf = re.sub(r'location = \S+', f'location = file:{self.dir}/ctdbd.log', conf)
        conf = re.sub(r'log level = \S+', 'log level = NOTICE', conf)
        conf = re.sub(r'cluster lock = \S+', f'cluster lock = {c.shared}/ctdb/reclock', conf)
        with open(os.path.join(self.etc, 'ctdb.conf'), 'w') as f:
            f.write(conf)
        self._from_dist('nodes', lambda line: c.address(11 + ['192.168.200.11',
                                                              '192.168.200.12'].index(line)))
        self._from_dist('public_addresses', lambda line: re.sub(
            r'^10\.0\.0\.(\d+)/24 eth0$',
            lambda m: f'{c.address(int(m.group(1)))}/24 ibx0', line))
        with open(os.path.join(DIST, 'ctdb.tunables')) as f:
            tunables = f.read()
        tunables = re.sub(r'MonitorInterval=\d+', 'MonitorInterval=2', tunables)
        tunables += ''.join(f'{k}={v}\n' for k, v in c.tunables.items())
        with open(os.path.join(self.etc, 'ctdb.tunables'), 'w') as f:
            f.write(tunables)
        with open(os.path.join(DIST, 'script.options')) as f:
            options = f.read()
        options = re.sub(r'INBOXFS_MOUNTPOINTS=.*', f'INBOXFS_MOUNTPOINTS="{c.mnt}"', options)
        with open(os.path.join(self.etc, 'script.options'), 'w') as f:
            f.write(options)
        legacy = os.path.join(self.etc, 'events', 'legacy')
        shutil.copy(os.path.join(DIST, 'events', 'legacy', '50.inboxfs.script'), legacy)
        self.run(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'ibx-run', '/run'])
        self.run(['mkdir', '-p', '/run/ctdb', '/run/samba'])
        self.run(['mount', '--bind', self.etc, '/etc/ctdb'])
        self.run(['mount', '--bind', self.var, '/var/lib/ctdb'])

    def _from_dist(self, name, fill):
        with open(os.path.join(DIST, name)) as f:
            lines = [line.rstrip('\n') for line in f]
        out = [fill(line) if line and not line.startswith('#') else line for line in lines]
        with open(os.path.join(self.etc, name), 'w') as f:
            f.write('\n'.join(out) + '\n')

    def mount_volume(self):
        c = self.cluster
        self.run(['mount', '-t', 'glusterfs', '-o',
                  f'log-file={os.path.join(self.dir, "glusterfs.log")}',
                  f'{c.gluster.host}:/{c.gluster.volume}', c.shared])

    def start_inboxfs(self, **opts):
        c = self.cluster
        o = ','.join(f'{k}={v}' for k, v in opts.items())
        self.popen('inboxfs', [BIN, '-f'] + (['-o', o] if o else []) + [c.inbox, c.mnt])
        wait_until(self._mounted, timeout=TIMEOUT * 3, interval=0.2,
                   what=f'inboxfs on node {self.n}')

    def _mounted(self):
        proc = self.run(['grep', '-c', f' {self.cluster.mnt} .* fuse.inboxfs ',
                         '/proc/self/mountinfo'], check=False)
        return proc.returncode == 0

    def start_ctdbd(self):
        # In the foreground, logging to its standard error (ctdbd.out.log);
        # its standard input stays open (a pipe we hold) for as long as it runs.
        self.popen('ctdbd.out', ['ctdbd', '--interactive'], stdin=subprocess.PIPE)

    def ctdb(self, *args, check=False):
        return self.run(['ctdb'] + list(args), check=check, timeout=TIMEOUT * 3)

    def write_smb_conf(self):
        conf = helpers.samba._smb_private_conf()
        for sub in conf.SUBDIRS:
            os.makedirs(os.path.join(self.samba, sub), exist_ok=True)
        settings = []
        with open(os.path.join(DIST, 'smb.conf')) as f:
            section = None
            for line in f:
                m = re.match(r'\s*\[(\w+)\]', line)
                if m:
                    section = m.group(1)
                    continue
                m = re.match(r'\s*([a-z][a-z0-9: ]*?)\s*=\s*(.*)$', line)
                if m and section:
                    settings.append((section, m.group(1), m.group(2)))
        settings += [('global', 'interfaces', 'lo ibx0'), ('global', 'bind interfaces only', 'no'),
                     # The clients come over the test's bridge, not from
                     # the addresses the shipped [inbox] admits.
                     ('inbox', 'hosts allow', f'127.0.0.1 {self.cluster.net}.0/24')]
        text = conf.render(SMB_PORT, self.samba, self.cluster.mnt, settings=settings,
                           client_user=SMB_USER)
        self.smb_conf = os.path.join(self.samba, 'smb.conf')
        with open(self.smb_conf, 'w') as f:
            f.write(text)

    def add_user(self):
        """With clustering = yes the passdb is one of CTDB's persistent
        databases, shared by the nodes: added once, through a live ctdbd."""
        proc = subprocess.run(self.argv(['pdbedit', '-s', self.smb_conf, '-a', '-t', '-u',
                                         SMB_USER]),
                              input=f'{SMB_PASSWORD}\n{SMB_PASSWORD}\n', capture_output=True,
                              text=True, timeout=TIMEOUT * 6)
        assert proc.returncode == 0, f'pdbedit: {proc.stdout}{proc.stderr}'

    def listening(self):
        out = self.run(['ss', '-Hltn', f'sport = :{SMB_PORT}'], check=False).stdout
        return bool(out.strip())

    def start_smbd(self):
        """smbd, listening. Two smbds starting at once in a cluster may
        both fail to claim the version record (NT_STATUS_POSSIBLE_DEADLOCK,
        "already running"): the loser exits and is started again."""
        for _ in range(5):
            proc = self.popen('smbd', ['smbd', '--foreground', '--no-process-group',
                                       '--debug-stdout', '-s', self.smb_conf])
            wait_until(lambda: proc.poll() is not None or self.listening(),
                       timeout=TIMEOUT * 6, interval=0.2, what=f'smbd on node {self.n}')
            if proc.poll() is None:
                return
            time.sleep(1)
        raise AssertionError(f'smbd on node {self.n} does not start:\n{self.log("smbd")}')

    def kill(self, name):
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=TIMEOUT)

    def kill_all(self):
        """Every process of the node, the holder included: a node gone."""
        self.dead = True
        for _ in range(10):
            pids = self.pids()
            if self.holder and self.holder.poll() is None:
                pids.append(self.holder.pid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for proc in list(self.procs.values()) + ([self.holder] if self.holder else []):
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            if proc.stdin:
                proc.stdin.close()


class Cluster:
    def __init__(self, base):
        self.base = base
        self.tag = 'ibx%04x' % random.randrange(0x10000)
        self.bridge = f'{self.tag}br'
        self.net = self._free_subnet()
        self.shared = os.path.join(base, 'cluster')     # each node's volume mount
        self.inbox = os.path.join(self.shared, 'inbox')
        self.mnt = os.path.join(base, 'mnt')            # each node's inboxfs mount
        self.check = os.path.join(base, 'check')        # the host's volume mount
        self.gluster = None
        self.nodes = [Node(self, 1), Node(self, 2)]
        self.links = []
        self.tunables = {}
        self.volume_options = {}

    @staticmethod
    def _free_subnet():
        routes = _run(['ip', '-4', 'route', 'show', 'table', 'all']).stdout
        for _ in range(100):
            net = f'10.{random.randrange(200, 250)}.{random.randrange(1, 250)}'
            if f'{net}.' not in routes:
                return net
        raise AssertionError('no free private subnet')

    def address(self, host):
        return f'{self.net}.{host}'

    def start(self, **inboxfs_opts):
        for d in (self.shared, self.mnt):
            os.mkdir(d)
        _run(['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
        self.links.append(self.bridge)
        _run(['ip', 'addr', 'add', f'{self.address(1)}/24', 'dev', self.bridge])
        _run(['ip', 'link', 'set', self.bridge, 'up'])
        for node in self.nodes:
            node.start_holder()
            node.setup_network()
            self.links.append(node.veth_host)
        # The brick on the bridge's address: inside a namespace the host's
        # name would resolve to the node's own loopback.
        self.gluster = Gluster(os.path.join(self.base, 'gluster'))
        os.mkdir(self.gluster.base)
        self.gluster.host = self.address(1)
        self.gluster.nodes = [self.check]
        self.gluster.start_daemon()
        self.gluster.start_volume()
        for key, value in {'network.ping-timeout': 5, **self.volume_options}.items():
            _run(['gluster', '--mode=script', 'volume', 'set', self.gluster.volume, key,
                  str(value)])
        os.makedirs(os.path.join(self.check, 'inbox'), mode=0o1777)
        os.chmod(os.path.join(self.check, 'inbox'), 0o1777)
        os.makedirs(os.path.join(self.check, 'ctdb'))
        helpers.ensure_system_user(SMB_FORCE_USER)
        helpers.ensure_system_user(SMB_USER)
        for node in self.nodes:
            node.setup_ctdb()
            node.mount_volume()
            node.start_inboxfs(**inboxfs_opts)
            node.write_smb_conf()
        for node in self.nodes:
            node.start_ctdbd()
        for node in self.nodes:
            wait_until(lambda: node.ctdb('ping').returncode == 0, timeout=TIMEOUT * 6,
                       interval=0.5, what=f'ctdbd on node {node.n}')
            if node.n == 1:
                node.add_user()
            node.start_smbd()
        self.wait_healthy(timeout=TIMEOUT * 9)
        return self

    @property
    def inbox_seen(self):
        return os.path.join(self.check, 'inbox')

    def ip_owners(self, via=None):
        """{public address: pnn} (-1: nobody)."""
        node = via or next(n for n in self.nodes if not n.dead)
        out = node.ctdb('-X', 'ip').stdout
        owners = {}
        for line in out.splitlines()[1:]:
            f = line.strip('|').split('|')
            if len(f) >= 2:
                owners[f[0]] = int(f[1])
        return owners

    def wait_healthy(self, timeout=TIMEOUT * 6):
        def ok():
            live = [n for n in self.nodes if not n.dead]
            owners = self.ip_owners()
            pnns = {n.n - 1 for n in live}
            return (len(owners) == 2 and set(owners.values()) == pnns
                    and all(n.ctdb('nodestatus').returncode == 0 for n in live))
        wait_until(ok, timeout=timeout, interval=0.5, what='both nodes healthy, one address each')

    def wait_owner(self, address, pnn, timeout=TIMEOUT * 6):
        """Until node PNN says it holds ADDRESS."""
        via = self.nodes[pnn]
        wait_until(lambda: self.ip_owners(via).get(address) == pnn, timeout=timeout,
                   interval=0.1, what=f'{address} held by node {pnn + 1}')

    def logs(self):
        out = []
        for node in self.nodes:
            for name in ('ctdbd.out', 'inboxfs', 'smbd'):
                out.append(f'--- node {node.n} {name}\n{node.log(name)[-6000:]}')
        return '\n'.join(out)

    def stop(self):
        problems = []
        for node in self.nodes:
            if node.holder is None:
                continue
            if not node.dead:
                node.ctdb('shutdown')
            node.kill_all()
        if self.gluster:
            g = self.gluster
            if g.started:
                # Stopped here first, and its brick waited for: after a
                # partition it may take a few seconds to go, which
                # Gluster.stop() would report as a process outliving it.
                for node in list(g.mounted):
                    clients = _our_processes(node)      # the host's GlusterFS client
                    if _run(['umount', node], check=False).returncode == 0:
                        g.mounted.remove(node)
                    # Unmounted, it may linger for a while once the brick is
                    # being stopped (seen after the partition test): wait for
                    # it while the brick still answers, then end it by pid.
                    try:
                        wait_until(lambda: not any(os.path.exists(f'/proc/{pid}')
                                                   for pid in clients),
                                   timeout=TIMEOUT * 2, interval=0.2, what='the client to exit')
                    except TimeoutError:
                        for pid in clients:
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                _run(['gluster', '--mode=script', 'volume', 'stop', g.volume, 'force'],
                     check=False)
                try:
                    wait_until(lambda: _our_processes(g.base) == [g.pid], timeout=TIMEOUT * 3,
                               interval=0.2, what='the brick to stop')
                except TimeoutError:
                    pass
            left = {}
            for pid in _our_processes(g.base):
                try:
                    with open(f'/proc/{pid}/cmdline', 'rb') as f:
                        left[pid] = f.read().replace(b'\0', b' ').decode(errors='replace')
                except OSError:
                    pass
            for problem in g.stop():
                m = re.search(r'process (\d+)', problem)
                problems.append(f'{problem}: {left.get(int(m.group(1)), "?")}' if m else problem)
        for link in reversed(self.links):
            _run(['ip', 'link', 'del', link], check=False)
        return problems


@pytest.fixture
def cluster(request):
    """Factory: cluster(**inboxfs options) sets up the two nodes; torn down
    at the end whatever happened."""
    reason = _prerequisites()
    if reason:
        pytest.skip(reason)
    made = []

    def factory(tunables=None, volume_options=None, **opts):
        c = Cluster(helpers.make_base_dir('inboxfs-ctdb-'))
        c.tunables = dict(tunables or {})
        c.volume_options = dict(volume_options or {})
        made.append(c)
        request.node._inboxfs_logs = getattr(request.node, '_inboxfs_logs', {})
        request.node._inboxfs_logs['ctdb cluster'] = c.logs
        started = time.monotonic()
        c.start(**opts)
        print(f'\ncluster up in {time.monotonic() - started:.1f} s')
        return c

    yield factory
    problems = []
    for c in made:
        problems += c.stop()
        if not problems and not os.environ.get('INBOXFS_KEEP'):
            shutil.rmtree(c.base, ignore_errors=True)
    assert not problems, problems


@pytest.fixture
def storms():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def _storm(started, address, inbox, seconds, clients, run_id, settle=0):
    """inbox-storm against ADDRESS, verified in INBOX (the host's view)
    SETTLE seconds after its last close (linger= delays publication)."""
    started.append(subprocess.Popen(
        [STORM, '--json', '-q', '--clients', str(clients), '--duration', str(seconds),
         '--settle', str(settle), '--run-id', run_id, '-U', f'{SMB_USER}%{SMB_PASSWORD}',
         '--verify', inbox, f'smb://{address}:{SMB_PORT}/inbox'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd='/'))
    return started[-1]


def _clients_after(inbox, run_id, since):
    """The clients of run RUN_ID with a message in INBOX written after
    SINCE (wall clock): those that sent again after a failover."""
    clients = set()
    for e in os.scandir(inbox):
        try:
            if not e.is_file() or e.stat().st_mtime <= since:
                continue
            with open(e.path, 'rb') as f:
                head = f.readline().split()
        except OSError:
            continue
        if len(head) >= 4 and head[0] == b'inbox-storm' and head[1] == run_id.encode():
            clients.add(int(head[2]))
    return clients


def _flags(cluster, node):
    """Node NODE's flags as `ctdb -X nodestatus all` on a live node
    reports them: {'Disconnected': '0', 'Unhealthy': '1', ...}."""
    live = next(n for n in cluster.nodes if not n.dead)
    lines = live.ctdb('-X', 'nodestatus', 'all').stdout.splitlines()
    if not lines:
        return {}
    head = lines[0].strip('|').split('|')
    for line in lines[1:]:
        f = line.strip('|').split('|')
        if f and f[0] == str(node.n - 1):
            return dict(zip(head, f))
    return {}


def test_storms_and_a_node_killed(cluster, storms):
    """Legacy storms (clock-seeded colliding names, create-new, no retry)
    against both public addresses at once deliver every message exactly
    once. Then every process of node 2 is killed mid-storm, with linger=2
    so that acknowledged drops are still in its staging area: its address
    moves to node 1, its clients (libsmbclient reconnects) send again,
    every acknowledged drop is delivered exactly once and nothing twice,
    and node 1's running inboxfs takes node 2's area over while node 2
    stays dead."""
    c = cluster(linger=2)
    owners = c.ip_owners()
    assert sorted(owners) == sorted(n.public for n in c.nodes), owners
    # CTDB gives each node one of the addresses, not necessarily its "own".
    addr1, addr2 = sorted(owners)
    survivor, victim = (c.nodes[owners[addr1]], c.nodes[owners[addr2]])
    assert survivor is not victim

    s1 = _storm(storms, addr1, c.inbox_seen, 8, 4, '1111111111111111', settle=4)
    s2 = _storm(storms, addr2, c.inbox_seen, 8, 4, '2222222222222222', settle=4)
    for proc in (s1, s2):
        status, summary, err = _summary(proc)
        _assert_exactly_once(summary, err)
        for key in ('lost', 'collisions', 'errors'):
            assert summary[key] == 0, (key, summary, err)
        assert status == 0, (summary, err)

    s1 = _storm(storms, addr1, c.inbox_seen, 16, 4, '3333333333333333', settle=4)
    s2 = _storm(storms, addr2, c.inbox_seen, 16, 4, '4444444444444444', settle=4)
    time.sleep(5)
    area = [a for a in staging_areas(os.path.join(c.inbox_seen, '.inboxfs'))
            if f'.{victim.procs["inboxfs"].pid}.' in a]
    assert area, staging_areas(os.path.join(c.inbox_seen, '.inboxfs'))
    victim.kill_all()
    killed = time.monotonic()
    c.wait_owner(addr2, survivor.n - 1, timeout=TIMEOUT * 6)
    moved = time.monotonic() - killed
    moved_at = time.time()
    wait_until(lambda: area[0] not in staging_areas(os.path.join(c.inbox_seen, '.inboxfs')),
               timeout=TIMEOUT * 6, interval=0.2, what="the dead node's staging area taken over")
    taken = time.monotonic() - killed
    _, sum1, err1 = _summary(s1)
    _, sum2, err2 = _summary(s2)
    _assert_exactly_once(sum1, err1)
    _assert_exactly_once(sum2, err2)
    print(f'\naddress moved {moved:.1f} s after the kill, area taken over after {taken:.1f} s;'
          f'\nsurvivor\'s storm {sum1}\nvictim\'s storm {sum2}')
    # The victim's clients reconnected to its address, now the survivor's,
    # and sent again.
    again = _clients_after(c.inbox_seen, '4444444444444444', moved_at + 1)
    assert again, 'no client of the dead node\'s address sent anything after the failover'
    print(f'clients of the moved address that sent again: {sorted(again)}')
    log = survivor.log('inboxfs')
    assert log.count('taken over while serving') == 1, log
    assert staged(c.inbox_seen, acked=True) == []
    assert victim.holder.poll() is not None and not victim.pids()


@pytest.mark.long
def test_event_script_moves_the_address(cluster):
    """50.inboxfs.script's monitor event: inboxfs alone killed on one node,
    then (that node repaired) smbd alone killed on the other: each time
    CTDB marks the node unhealthy and moves its address to the other, which
    takes drops for it. Without the script CTDB notices neither."""
    c = cluster()
    owners = c.ip_owners()
    addr_a, addr_b = sorted(owners)
    a, b = c.nodes[owners[addr_a]], c.nodes[owners[addr_b]]

    def fails_over(node, addr, to):
        started = time.monotonic()
        wait_until(lambda: _flags(c, node).get('Unhealthy') == '1', timeout=TIMEOUT * 6,
                   interval=0.2, what=f'node {node.n} unhealthy')
        c.wait_owner(addr, to.n - 1, timeout=TIMEOUT * 6)
        took = time.monotonic() - started
        name = f'AFTER{node.n}.TXT'
        proc = subprocess.run(['smbclient', '-U', f'{SMB_USER}%{SMB_PASSWORD}',
                               f'//{addr}/inbox', '-c', f'put /etc/hostname {name}'],
                              capture_output=True, text=True, timeout=TIMEOUT * 6)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_until(lambda: os.path.exists(os.path.join(c.inbox_seen, name)),
                   what=f'{name} through {addr}')
        return took

    a.kill('inboxfs')
    t_inboxfs = fails_over(a, addr_a, b)
    assert 'no inboxfs mounted' in a.log('ctdbd.out') or \
        'does not answer' in a.log('ctdbd.out'), a.log('ctdbd.out')

    a.start_inboxfs()
    c.wait_healthy(timeout=TIMEOUT * 9)
    owners = c.ip_owners()
    addr_b = next(addr for addr, pnn in owners.items() if pnn == b.n - 1)
    b.kill('smbd')
    t_smbd = fails_over(b, addr_b, a)
    assert 'smbd not listening on TCP port' in b.log('ctdbd.out'), b.log('ctdbd.out')
    print(f'\naddress moved {t_inboxfs:.1f} s after inboxfs was killed, '
          f'{t_smbd:.1f} s after smbd was')


@pytest.mark.long
def test_node_cut_off(cluster, storms):
    """A node cut off from the network (its veth pair's host end down)
    while its processes live, mid-storm, inboxfs with linger=2: the other
    node takes its address; the brick drops the cut-off node's locks and
    the survivor takes its staging area over; once the network is back,
    nothing was delivered twice and every acknowledged drop was delivered,
    and the cut-off node's inboxfs, its area gone, stops."""
    c = cluster(linger=2, tunables={'KeepaliveInterval': 1, 'KeepaliveLimit': 5},
                volume_options={'server.keepalive-time': 2, 'server.keepalive-interval': 1,
                                'server.keepalive-count': 3, 'server.tcp-user-timeout': 5})
    owners = c.ip_owners()
    addr1, addr2 = sorted(owners)
    survivor, victim = (c.nodes[owners[addr1]], c.nodes[owners[addr2]])
    area = [a for a in staging_areas(os.path.join(c.inbox_seen, '.inboxfs'))
            if f'.{victim.procs["inboxfs"].pid}.' in a]
    assert area

    s1 = _storm(storms, addr1, c.inbox_seen, 20, 4, '5555555555555555', settle=40)
    s2 = _storm(storms, addr2, c.inbox_seen, 20, 4, '6666666666666666', settle=40)
    time.sleep(5)
    _run(['ip', 'link', 'set', victim.veth_host, 'down'])
    cut = time.monotonic()
    c.wait_owner(addr2, survivor.n - 1, timeout=TIMEOUT * 9)
    moved = time.monotonic() - cut
    wait_until(lambda: area[0] not in staging_areas(os.path.join(c.inbox_seen, '.inboxfs')),
               timeout=TIMEOUT * 9, interval=0.2, what="the cut-off node's area taken over")
    taken = time.monotonic() - cut
    _run(['ip', 'link', 'set', victim.veth_host, 'up'])
    healed = time.monotonic()
    _, sum1, err1 = _summary(s1, timeout=TIMEOUT * 18)
    _, sum2, err2 = _summary(s2, timeout=TIMEOUT * 18)
    print(f'\naddress moved {moved:.1f} s after the cut, area taken over after {taken:.1f} s, '
          f'healed {healed - cut:.1f} s after the cut;\nsurvivor\'s storm {sum1}\n'
          f'cut-off node\'s storm {sum2}')
    _assert_exactly_once(sum1, err1)
    _assert_exactly_once(sum2, err2)
    assert survivor.log('inboxfs').count('taken over while serving') == 1
    # Back on the network, the cut-off node's inboxfs finds its area taken
    # over (its lock was lost with its GlusterFS client's connection) and
    # stops, rather than publishing from an area another node recovers
    # (on d1c09b9 it went on retrying its lingering drops there, ESTALE,
    # while CTDB called the node healthy again); CTDB then marks the node
    # unhealthy (50.inboxfs.script), so no address goes back to it.
    proc = victim.procs['inboxfs']
    wait_until(lambda: proc.poll() is not None, timeout=TIMEOUT * 6, interval=0.2,
               what="the cut-off node's inboxfs to stop")
    assert proc.returncode == 1
    assert 'is no longer this instance\'s' in victim.log('inboxfs'), victim.log('inboxfs')
    wait_until(lambda: _flags(c, victim).get('Unhealthy') == '1', timeout=TIMEOUT * 6,
               interval=0.5, what='the cut-off node unhealthy')
    assert set(c.ip_owners(survivor).values()) == {survivor.n - 1}
