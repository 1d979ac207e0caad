"""The project's test support, by concern: env (settings, uids, accounts,
directories), procs (processes, waits, /proc, the mounts), files (the backing
inbox as the consumer sees it), messages (self-proving messages, their
accounting, a legacy writer of them), mount (inboxfs daemons and mounts, the
io_uring switch), client (client uids and sessions, a killed writer), samba (a
private smbd and an SMB client), loopfs (a loop-mounted ext4 image).

It serves the integration tests and tools/bench, which imports it by path
from the source tree: nothing here imports pytest (what a machine cannot
do raises Unavailable; fixtures skip on it). Fixtures in conftest.py wrap
these; tests import every public name from the package itself (`import
helpers`, `from helpers import ...`), except the short names of
helpers.posix, which are imported from there."""

from .env import (CLIENT_UID, INBOXFS_BIN, LONG, OBSERVER_UID, OTHER_UID,
                  SMB_CONSUMER_PASSWORD, SMB_CONSUMER_SHARE, SMB_CONSUMER_USER,
                  SMB_FORCE_USER, SMB_PASSWORD, SMB_SHARE, SMB_USER, SOURCE,
                  STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS, TIMEOUT, WRAPPER, DEFAULT_OPTS,
                  Unavailable, copy_source, ensure_system_user, free_port, is_build_dir,
                  make_base_dir)
from .procs import (MountEntry, drop_privileges, inboxfs_daemons, kernel_stacks, mounted_under,
                    mounts, open_files, process_group, processes, read_log, reap, stop_process, task_ids,
                    wait_until)
from .files import (STATS, TAG, assert_delivered_once, create_excl, errno_of, hold_drops,
                    inbox_contents, incomplete, read_file, read_stats, staged,
                    staging_area, staging_areas, try_create_excl, write_all, write_file,
                    xattr_64k_supported)
from .messages import (QUARANTINE_LINE, STAGING, assert_quarantine_accounted, claimed_id,
                       inbox_files, message, message_id, quarantine_lines, storm_writer)
from .mount import (DaemonRun, ERROR_PATTERN, Mount, SANITIZER_PATTERNS, abort_fuse,
                    format_options, fuse_connection, fuse_prerequisites, mountinfo,
                    reap_all, run_inboxfs, uring_param)
from .client import Client, ClientSession, kill_writer, run_together, stream_bytes
from .samba import Samba, SmbClient, SmbSessions, nt_status_name, samba_prerequisites
from .loopfs import LoopFs

__all__ = [
    'CLIENT_UID', 'INBOXFS_BIN', 'LONG', 'OBSERVER_UID', 'OTHER_UID',
    'SMB_CONSUMER_PASSWORD', 'SMB_CONSUMER_SHARE', 'SMB_CONSUMER_USER', 'SMB_FORCE_USER',
    'SMB_PASSWORD', 'SMB_SHARE', 'SMB_USER', 'SOURCE', 'STATUS_OBJECT_NAME_COLLISION',
    'STATUS_SUCCESS', 'TIMEOUT', 'WRAPPER', 'Unavailable', 'copy_source', 'ensure_system_user', 'free_port',
    'is_build_dir', 'make_base_dir', 'MountEntry', 'drop_privileges', 'inboxfs_daemons',
    'kernel_stacks', 'mounted_under', 'mounts', 'open_files', 'process_group', 'processes', 'read_log', 'reap',
    'stop_process', 'task_ids', 'wait_until', 'STATS', 'TAG', 'assert_delivered_once',
    'create_excl', 'errno_of', 'hold_drops', 'inbox_contents', 'incomplete', 'read_file', 'read_stats',
    'staged', 'staging_area', 'staging_areas', 'try_create_excl', 'write_all',
    'write_file', 'xattr_64k_supported', 'QUARANTINE_LINE', 'STAGING',
    'assert_quarantine_accounted', 'claimed_id', 'inbox_files', 'message', 'message_id',
    'quarantine_lines', 'storm_writer', 'DaemonRun', 'ERROR_PATTERN', 'Mount', 'SANITIZER_PATTERNS',
    'abort_fuse', 'format_options', 'fuse_connection', 'fuse_prerequisites', 'mountinfo',
    'reap_all', 'run_inboxfs', 'uring_param', 'Client', 'ClientSession', 'kill_writer', 'run_together',
    'stream_bytes', 'Samba',
    'SmbClient', 'SmbSessions', 'nt_status_name', 'samba_prerequisites', 'LoopFs',
]
