"""The test machinery itself, against a plain directory (no inboxfs): the
private smbd from dist/samba/smb.conf delivers files as inboxfs-smb, and
create-new collides there: the message loss inboxfs exists to prevent."""

import errno
import os
import pwd

import pytest

from helpers import (SMB_FORCE_USER, STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS,
                     nt_status_name)


def test_smbclient_put_lands_as_force_user(samba, plain_inbox, tmp_path):
    payload = os.urandom(100_000)
    local = tmp_path / 'message.svf'
    local.write_bytes(payload)

    server = samba(plain_inbox)
    assert server.port != 445
    server.smbclient_put(local, 'Q7WX2K9A.SVF')

    stored = os.path.join(plain_inbox, 'Q7WX2K9A.SVF')
    with open(stored, 'rb') as f:
        assert f.read() == payload
    assert os.stat(stored).st_uid == pwd.getpwnam(SMB_FORCE_USER).pw_uid


def test_create_new_collision_loses_message_on_plain_directory(samba, plain_inbox):
    server = samba(plain_inbox)

    first = server.smb_create_new('K3J9QZ1M.SVF', b'first client')
    second = server.smb_create_new('K3J9QZ1M.SVF', b'second client')

    assert first == STATUS_SUCCESS, nt_status_name(first)
    assert second == STATUS_OBJECT_NAME_COLLISION, nt_status_name(second)
    # The second client's message is gone: only the first reached the inbox.
    assert os.listdir(plain_inbox) == ['K3J9QZ1M.SVF']
    with open(os.path.join(plain_inbox, 'K3J9QZ1M.SVF'), 'rb') as f:
        assert f.read() == b'first client'


def test_one_connection_sees_its_own_create(samba, plain_inbox):
    server = samba(plain_inbox)
    conn = server.connect()

    assert conn.create_new('OWN.SVF', b'mine') == STATUS_SUCCESS
    assert conn.listdir() == ['OWN.SVF']
    assert conn.read('OWN.SVF') == b'mine'
    assert conn.create_new('OWN.SVF', b'again') == STATUS_OBJECT_NAME_COLLISION


def _create_excl(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return os.getuid(), os.getgid(), os.getgroups()


def test_client_helpers_switch_uid(as_client, plain_inbox):
    client = as_client(60002)
    path = os.path.join(plain_inbox, 'by-client')

    assert client.call(_create_excl, path, b'x') == (60002, 60002, [])
    assert os.stat(path).st_uid == 60002
    with pytest.raises(FileExistsError):
        client.call(_create_excl, path, b'y')

    proc = client.run(['id', '-u'])
    assert proc.stdout.strip() == b'60002'


def test_client_session_keeps_descriptors(as_client, plain_inbox):
    session = as_client().session()
    path = os.path.join(plain_inbox, 'held')

    fd = session.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    assert session.write(fd, b'kept open') == 9
    assert session.getuid() == 60001
    with pytest.raises(OSError) as e:
        session.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    assert e.value.errno == errno.EEXIST
    session.close(fd)
    with open(path, 'rb') as f:
        assert f.read() == b'kept open'
