"""tools/bench, the side-by-side benchmark (README "Benchmarks"): it shares
this suite's support package; a --quick run finishes and reports every
section with positive numbers (a long test: it builds build-bench/ and
takes a minute or two; INBOXFS_LONG=1, tools/test --long)."""

import json
import os
import subprocess

import pytest

import helpers
from helpers import SOURCE

BENCH = os.path.join(SOURCE, 'tools', 'bench')
SECTIONS = ['local', 'samba', 'seq', 'ls', 'storm', 'fuse', 'scale', 'daemon']


def positive_numbers(row):
    """The numbers of a result row (samples included), none of them <= 0."""
    values = [v for k, v in row.items() if isinstance(v, (int, float))
              and not isinstance(v, bool) and k not in ('lost', 'collisions', 'corrupt',
                                                         'duplicated', 'errors')]
    values += row.get('samples', [])
    return values and all(v > 0 for v in values)


def test_bench_shares_the_tests_support_package():
    """tools/bench imports this package (tests/integration/helpers) by path,
    outside pytest: the package imports where pytest is missing, and the
    bench starts (--help lists its sections, the long test's among them)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        ['/usr/bin/python3', '-c', "import sys; sys.modules['pytest'] = None; "
         f'sys.path.insert(0, {tests!r}); import helpers'],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(['/usr/bin/python3', BENCH, '--help'], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.split('\nsections:\n')[1].splitlines()]
    assert set(SECTIONS) <= set(listed), listed


@pytest.mark.long
def test_quick_bench_reports_every_section(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('tools/bench runs as root (mounts, client uids, smbd)')
    out = tmp_path / 'bench.json'

    proc = subprocess.run([BENCH, '--quick', '--out', str(out)], cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=1200)

    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    res = json.loads(out.read_text())
    assert res['errors'] == {}
    for section in SECTIONS:
        rows = res[section]['rows']
        assert rows, section
        for row in rows:
            assert positive_numbers(row), (section, row)
    # Side by side: every configuration ran, with its ratio to the raw directory.
    configs = {r['config'] for r in res['local']['rows']}
    assert {'raw directory', 'inboxfs client sync=none', 'inboxfs client sync=close',
            'inboxfs observer sync=none', 'inboxfs observer sync=close'} <= configs
    assert {r['writers'] for r in res['local']['rows']} == {1, 4, 16}
    assert {r['connections'] for r in res['samba']['rows']} == {1, 8}
    assert all(r['vs_raw'] > 0 for r in res['samba']['rows'])
    # CPU per drop: smbd's in every row, the daemon's where inboxfs serves.
    for r in res['samba']['rows']:
        assert int(r['smbd_us_per_drop'].replace(',', '')) > 0, r
        assert (r['daemon_us_per_drop'] == '-') == ('inboxfs' not in r['config']), r
    # Correctness under the storm: Samba over inboxfs loses nothing.
    storm = {r['config']: r for r in res['storm']['rows']}
    inboxfs = storm['Samba over inboxfs sync=close']
    assert inboxfs['lost'] == inboxfs['corrupt'] == inboxfs['duplicated'] == 0
    assert storm['Samba over raw directory']['lost'] > 0
    assert res['targets']['rows']
    assert '| raw directory |' in proc.stdout
    # Nothing left behind: no mount, no loop image.
    assert not [m for m in helpers.mounts() if 'inboxfs-bench-' in m.point + m.source]
