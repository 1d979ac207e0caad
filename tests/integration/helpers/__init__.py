"""Machinery for the integration tests, by concern: env (settings, uids,
accounts, directories), procs (processes, waits, /proc), files (the backing
inbox as the consumer sees it), mount (inboxfs daemons and mounts), client
(client uids and sessions), samba (a private smbd and an SMB client).
Fixtures in conftest.py wrap these; tests import every public name from
the package itself (`import helpers`, `from helpers import ...`)."""

from .env import (CLIENT_UID, INBOXFS_BIN, LONG, OBSERVER_UID, SMB_CONSUMER_PASSWORD,
                  SMB_CONSUMER_SHARE, SMB_CONSUMER_USER, SMB_FORCE_USER, SMB_PASSWORD,
                  SMB_SHARE, SMB_USER, SOURCE, STATUS_OBJECT_NAME_COLLISION,
                  STATUS_SUCCESS, TIMEOUT, WRAPPER, ensure_system_user, free_port,
                  make_base_dir)
from .procs import (drop_privileges, inboxfs_daemons, open_files, process_group,
                    processes, read_log, reap, stop_process, wait_until)
from .files import (create_excl, errno_of, inbox_contents, incomplete, staged,
                    staging_area, staging_areas, xattr_64k_supported)
from .mount import (DaemonRun, ERROR_PATTERN, Mount, SANITIZER_PATTERNS, format_options,
                    fuse_prerequisites, mountinfo, run_inboxfs)
from .client import (Client, ClientSession, run_together)
from .samba import (Samba, SmbClient, nt_status_name, samba_prerequisites)

__all__ = [
    'CLIENT_UID', 'INBOXFS_BIN', 'LONG', 'OBSERVER_UID', 'SMB_CONSUMER_PASSWORD',
    'SMB_CONSUMER_SHARE', 'SMB_CONSUMER_USER', 'SMB_FORCE_USER', 'SMB_PASSWORD',
    'SMB_SHARE', 'SMB_USER', 'SOURCE', 'STATUS_OBJECT_NAME_COLLISION', 'STATUS_SUCCESS',
    'TIMEOUT', 'WRAPPER', 'ensure_system_user', 'free_port', 'make_base_dir',
    'drop_privileges', 'inboxfs_daemons', 'open_files', 'process_group', 'processes',
    'read_log', 'reap', 'stop_process', 'wait_until', 'create_excl', 'errno_of',
    'inbox_contents', 'incomplete', 'staged', 'staging_area', 'staging_areas',
    'xattr_64k_supported', 'DaemonRun', 'ERROR_PATTERN', 'Mount', 'SANITIZER_PATTERNS',
    'format_options', 'fuse_prerequisites', 'mountinfo', 'run_inboxfs', 'Client',
    'ClientSession', 'run_together', 'Samba', 'SmbClient', 'nt_status_name',
    'samba_prerequisites',
]
