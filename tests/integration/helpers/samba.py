"""A private Samba server configured from dist/samba/smb.conf, and an impacket
SMB2/3 client connection to it."""

import os
import shutil
import signal
import socket
import subprocess
import time

from .env import (SMB_CONSUMER_PASSWORD, SMB_CONSUMER_USER, SMB_FORCE_USER, SMB_PASSWORD,
                  SMB_SHARE, SMB_USER, SOURCE, STATUS_SUCCESS, TIMEOUT, ensure_system_user,
                  free_port)
from .procs import process_group, read_log, stop_process, wait_until


def samba_prerequisites():
    for tool in ('smbd', 'smbclient', 'pdbedit'):
        if not shutil.which(tool):
            return f'{tool} is missing (apt-get install samba smbclient)'
    if os.geteuid() != 0:
        return 'a private smbd needs root'
    return None


def _smb_private_conf():
    """tools/smb-private-conf as a module (it has no .py name)."""
    import importlib.machinery
    import importlib.util
    path = os.path.join(SOURCE, 'tools', 'smb-private-conf')
    loader = importlib.machinery.SourceFileLoader('smb_private_conf', path)
    spec = importlib.util.spec_from_loader('smb_private_conf', loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Samba:
    """A private smbd on 127.0.0.1:PORT exporting `share_path` as
    //127.0.0.1/inbox, configured from dist/samba/smb.conf. SMB user inboxtest
    (password inboxtest) is mapped to the account inboxfs-smb."""

    def __init__(self, share_path, base, share_options=None, global_options=None,
                 consumer_path=None, smb1=False):
        self.share_path = share_path
        self.consumer_path = consumer_path
        self.smb1 = smb1
        self.base = base
        self.share_options = dict(share_options or {})
        self.global_options = dict(global_options or {})
        self.statedir = os.path.join(base, 'state')
        self.conf = os.path.join(base, 'smb.conf')
        self.log_path = os.path.join(base, 'smbd.log')
        self.port = None
        self.proc = None
        self.connections = []

    def write_config(self):
        """dist/samba/smb.conf as a private smbd (tools/smb-private-conf): the
        clients' share [inbox] on share_path, the consumer's [consumer] on
        consumer_path (left out without one), SMB1 lines on with smb1."""
        conf = _smb_private_conf()
        for sub in conf.SUBDIRS:
            os.makedirs(os.path.join(self.statedir, sub), exist_ok=True)
        settings = [('inbox', k, v) for k, v in self.share_options.items()]
        text = conf.render(self.port, self.statedir, self.share_path,
                           consumer=self.consumer_path, consumer_user=SMB_CONSUMER_USER,
                           smb1=self.smb1, settings=settings, client_user=SMB_USER)
        with open(self.conf, 'w') as f:
            f.write(text)

    def start(self, timeout=TIMEOUT * 3):
        ensure_system_user(SMB_FORCE_USER)
        ensure_system_user(SMB_USER)
        for attempt in range(3):
            self.port = free_port()
            self.write_config()
            if attempt == 0:
                self.add_user(SMB_USER, SMB_PASSWORD)
                if self.consumer_path is not None:
                    ensure_system_user(SMB_CONSUMER_USER)
                    self.add_user(SMB_CONSUMER_USER, SMB_CONSUMER_PASSWORD)
            argv = ['smbd', '--foreground', '--no-process-group', '--debug-stdout',
                    '-s', self.conf]
            argv += [f'--option={k}={v}' for k, v in self.global_options.items()]
            # Its own session: smbd's parent signals its whole process group
            # when it shuts down, which must not be pytest's.
            with open(self.log_path, 'ab') as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.base, start_new_session=True)
            if self._wait_listening(timeout):
                return self
            # Lost the port to someone else between probe and bind: retry.
            stop_process(self.proc)
        raise AssertionError(f'smbd did not start\n{self.log()}')

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f'smbd did not listen on port {self.port} within '
                             f'{timeout:.0f}s\n{self.log()}')

    def add_user(self, user, password):
        proc = subprocess.run(['pdbedit', '-s', self.conf, '-a', '-t', '-u', user],
                              input=f'{password}\n{password}\n', capture_output=True,
                              text=True, timeout=TIMEOUT * 3)
        if proc.returncode != 0:
            raise AssertionError(f'pdbedit -a {user} failed:\n{proc.stdout}{proc.stderr}')

    def log(self):
        return read_log(self.log_path)

    def stop(self, timeout=TIMEOUT):
        for conn in self.connections:
            conn.disconnect()
        self.connections = []
        if self.proc is None:
            return
        # smbd runs in a process group of its own (start_new_session); its
        # children (one per connection, notifyd, cleanupd) follow their
        # parent out but are not ours to reap, so watch the group in /proc.
        # A group id is not reused while a member lives: killpg is safe.
        pgid = self.proc.pid
        stop_process(self.proc, timeout)
        self.proc = None
        try:
            wait_until(lambda: not process_group(pgid), timeout,
                       what='smbd children to exit')
        except TimeoutError:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not process_group(pgid), timeout,
                       what='smbd children to die')

    # -- clients

    def smbclient(self, commands, user=SMB_USER, password=SMB_PASSWORD,
                  timeout=TIMEOUT * 3):
        """Run smbclient -c COMMANDS against the share (CompletedProcess)."""
        return subprocess.run(
            ['smbclient', f'//127.0.0.1/{SMB_SHARE}', '-p', str(self.port),
             '-U', f'{user}%{password}', '-c', commands],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, cwd=self.base)

    def smbclient_put(self, local, remote_name, **kw):
        """smbclient 'put LOCAL REMOTE'; raises with smbclient's output when
        it fails (smbclient exits 1 on a failed command)."""
        proc = self.smbclient(f'put "{local}" "{remote_name}"', **kw)
        if proc.returncode != 0 or 'NT_STATUS_' in proc.stdout + proc.stderr:
            raise AssertionError(f'smbclient put {remote_name} failed '
                                 f'({proc.returncode}):\n{proc.stdout}{proc.stderr}')
        return proc

    def connect(self, user=SMB_USER, password=SMB_PASSWORD, share=SMB_SHARE,
                dialect=None):
        """A new SMB connection (one smbd process: one inboxfs session);
        dialect=impacket.smb.SMB_DIALECT for SMB1 (needs smb1=True)."""
        conn = SmbClient(self.port, user, password, share=share, dialect=dialect)
        self.connections.append(conn)
        return conn

    def connect_sessions(self, users, share=SMB_SHARE):
        """One connection carrying one SMB session per (user, password):
        a SmbSessions, disconnected at stop()."""
        conn = SmbSessions(self.port, users, share=share)
        self.connections.append(conn)
        return conn

    def smb_create_new(self, name, data=b'', conn=None):
        """FILE_CREATE (create-new) NAME, write DATA, close. Returns
        STATUS_SUCCESS or the NTSTATUS the server answered (e.g.
        STATUS_OBJECT_NAME_COLLISION). Without conn, on a fresh connection."""
        if conn is not None:
            return conn.create_new(name, data)
        conn = SmbClient(self.port, SMB_USER, SMB_PASSWORD)
        try:
            return conn.create_new(name, data)
        finally:
            conn.disconnect()


class SmbClient:
    """An impacket SMB2/3 connection with the share connected. Raw access:
    .conn (SMBConnection) and .tid."""

    def __init__(self, port, user, password, timeout=TIMEOUT * 3, share=SMB_SHARE,
                 dialect=None):
        from impacket.smbconnection import SMBConnection
        self.share = share
        self.conn = SMBConnection('127.0.0.1', '127.0.0.1', sess_port=port,
                                  timeout=timeout, preferredDialect=dialect)
        self.conn.login(user, password)
        self.tid = self.conn.connectTree(share)

    def create(self, name, disposition, data=None, close=True):
        """Open NAME with an SMB2 create disposition (FILE_CREATE,
        FILE_OPEN_IF, FILE_OVERWRITE_IF, FILE_SUPERSEDE, ...), write DATA.
        Returns (status, fid): fid is None when closed or failed."""
        from impacket import smb3structs as s3
        from impacket.smbconnection import SessionError
        try:
            fid = self.conn.createFile(
                self.tid, name,
                desiredAccess=(s3.FILE_READ_DATA | s3.FILE_WRITE_DATA
                               | s3.FILE_READ_ATTRIBUTES | s3.FILE_WRITE_ATTRIBUTES
                               | s3.DELETE),
                shareMode=s3.FILE_SHARE_READ,
                creationOption=s3.FILE_NON_DIRECTORY_FILE,
                creationDisposition=disposition)
        except SessionError as e:
            return e.getErrorCode(), None
        try:
            if data:
                self.conn.writeFile(self.tid, fid, data)
        except SessionError as e:
            self.conn.closeFile(self.tid, fid)
            return e.getErrorCode(), None
        if close:
            try:
                self.conn.closeFile(self.tid, fid)
            except SessionError as e:
                return e.getErrorCode(), None
            fid = None
        return STATUS_SUCCESS, fid

    def create_new(self, name, data=b''):
        from impacket import smb3structs as s3
        return self.create(name, s3.FILE_CREATE, data)[0]

    def close(self, fid):
        self.conn.closeFile(self.tid, fid)

    def listdir(self, pattern='*'):
        return sorted(f.get_longname() for f in self.conn.listPath(self.share, pattern)
                      if f.get_longname() not in ('.', '..'))

    def read(self, name):
        chunks = []
        self.conn.getFile(self.share, name, chunks.append)
        return b''.join(chunks)

    def disconnect(self):
        """Log off and drop the connection (its smbd process exits)."""
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.close()   # logs off itself: logging off first confuses smbd
        except Exception:
            pass


def nt_status_name(code):
    from impacket import nt_errors
    return nt_errors.ERROR_MESSAGES.get(code, (hex(code),))[0]


class SmbSessions:
    """One TCP connection (so one smbd process) carrying several SMB
    sessions, one per (user, password) given, as a terminal server's
    redirector multiplexes its users: SESSION_SETUP once per user on one
    impacket connection (SMB 2.1: no per-session encryption or pre-auth
    hash to keep apart), each with the share connected. .use(i) makes
    session i the one the next requests are sent in."""

    def __init__(self, port, users, share=SMB_SHARE, timeout=TIMEOUT * 3):
        import copy
        from impacket.smb3structs import SMB2_DIALECT_21
        from impacket.smbconnection import SMBConnection
        self.conn = SMBConnection('127.0.0.1', '127.0.0.1', sess_port=port,
                                  timeout=timeout, preferredDialect=SMB2_DIALECT_21)
        self.smb = self.conn.getSMBServer()
        blank = copy.deepcopy(self.smb._Session)
        self.sessions, self.tids = [], []
        for user, password in users:
            self.smb._Session = copy.deepcopy(blank)
            self.conn.login(user, password)
            self.tids.append(self.conn.connectTree(share))
            self.sessions.append(self.smb._Session)
        self.current = None

    def use(self, i):
        self.smb._Session = self.sessions[i]
        self.current = i
        return self

    def create_new(self, name, data):
        """FILE_CREATE NAME and write DATA in the current session, left
        open: (status, fid)."""
        from impacket import smb3structs as s3
        from impacket.smbconnection import SessionError
        tid = self.tids[self.current]
        try:
            fid = self.conn.createFile(
                tid, name, desiredAccess=s3.FILE_READ_DATA | s3.FILE_WRITE_DATA,
                shareMode=s3.FILE_SHARE_READ, creationOption=s3.FILE_NON_DIRECTORY_FILE,
                creationDisposition=s3.FILE_CREATE)
        except SessionError as e:
            return e.getErrorCode(), None
        self.conn.writeFile(tid, fid, data)
        return STATUS_SUCCESS, fid

    def close(self, fid):
        """Close FID in the current session: its NTSTATUS."""
        from impacket.smbconnection import SessionError
        # impacket keeps one table of open paths per connection, not per
        # session: two sessions' opens of one name share its entry.
        name = self.smb._Session['OpenTable'].get(fid, {}).get('FileName')
        if name is not None:
            self.smb.GlobalFileTable.setdefault(name, None)
        try:
            self.conn.closeFile(self.tids[self.current], fid)
        except SessionError as e:
            return e.getErrorCode()
        return STATUS_SUCCESS

    def disconnect(self):
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.close()
        except Exception:
            pass
