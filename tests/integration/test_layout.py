"""The source tree's layers, as a reader sees them: core/ knows nothing of
fs/ or FUSE, fs/transport/ (the libfuse backport) is reached only through
its one header, and no file includes, directly or through others, a header
that includes it back. Every module of fs/ and core/ has a header of its
own and a .c includes the faces of the modules it calls, so an include
circle is what a call circle between modules would need."""

import os
import re

import pytest

SOURCE = os.environ.get('INBOXFS_SOURCE',
                        os.path.dirname(os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))))
FOLDERS = ('core', 'fs', 'fs/transport', 'tools')
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def _sources():
    files = {}
    for folder in FOLDERS:
        top = os.path.join(SOURCE, folder)
        for name in sorted(os.listdir(top)):
            if name.endswith(('.c', '.h')):
                with open(os.path.join(top, name)) as f:
                    files[f'{folder}/{name}'] = f.read()
    return files


def _resolve(files, here, name):
    """The tree's file that #include "NAME" in HERE names (None: a system
    or generated header). Project headers are found in the including
    file's folder, then in core/, fs/ and fs/transport/ (the build's
    include path)."""
    for folder in (os.path.dirname(here), 'core', 'fs', 'fs/transport'):
        path = os.path.normpath(f'{folder}/{name}')
        if path in files:
            return path
    return None


def _graph(files):
    """Module -> modules it includes; a module is a .c and its .h."""
    def module(path):
        return path[:-2]
    graph = {}
    for path, text in files.items():
        deps = graph.setdefault(module(path), set())
        for name in INCLUDE.findall(text):
            target = _resolve(files, path, name)
            if target and module(target) != module(path):
                deps.add(module(target))
    return graph


def _circle(graph):
    """One circle of GRAPH as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 'open':
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_include_circle():
    circle = _circle(_graph(_sources()))
    assert circle is None, ' -> '.join(circle)


def test_the_check_sees_a_circle():
    """The check itself can fail: a circle of three modules is found."""
    assert _circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert _circle({'a': {'b'}, 'b': set()}) is None


@pytest.mark.parametrize('layer', ['core', 'fs'])
def test_layers_include_only_below(layer):
    """core/ includes nothing of fs/ nor libfuse; fs/ reaches the backport
    only through fs/transport/transport.h."""
    files = _sources()
    bad = []
    for path, text in files.items():
        if not path.startswith(layer + '/') or path.startswith('fs/transport/'):
            continue
        for name in INCLUDE.findall(text) + re.findall(r'#\s*include\s+<(fuse[^>]*)>', text):
            target = _resolve(files, path, name) or name
            if layer == 'core' and (target.startswith('fs/') or name.startswith('fuse')):
                bad.append(f'{path}: {name}')
            if layer == 'fs' and target.startswith('fs/transport/') and \
                    target != 'fs/transport/transport.h':
                bad.append(f'{path}: {name}')
    assert not bad, bad
