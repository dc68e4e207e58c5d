"""The house rules, read from the package's source: imports only run downhill, no private name
crosses a module border, the old `boxrefine.train` is a facade nothing imports."""
import ast
from pathlib import Path

import boxrefine

PKG = Path(boxrefine.__file__).parent
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))


def imports(module: str) -> list[tuple[str, list[str], int]]:
    "Every `(imported module, names, line)` of `module`, inside functions and classes included."
    tree = ast.parse((PKG / f'{module}.py').read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: target = node.module or ''
            elif node.module and node.module.split('.')[0] == 'boxrefine':
                target = node.module.removeprefix('boxrefine').lstrip('.')
            else: continue
            names = [a.name for a in node.names]
            if not target:                       # `from boxrefine import cli` / `from . import x`
                found += [(n, [], node.lineno) for n in names if n in MODULES]
            else: found.append((target.split('.')[0], names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[0] == 'boxrefine' and len(parts) > 1:
                    found.append((parts[1], [], node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    "One import cycle of `g` as a path, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 'open': return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)): return found
        state[m] = 'done'
        stack.pop()
    for m in g:
        if m not in state and (found := visit(m)): return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_imports_only_run_downhill():
    found = cycle(graph())
    assert found is None, f"import cycle: {' -> '.join(found)}"


def test_imports_inside_functions_are_read():
    # the command modules import the library inside their runners (argument errors before torch)
    assert {'refiner', 'demo', 'refine'} <= graph()['cli_refiner']


def test_cli_stands_on_its_command_modules():
    # cli imports only the command modules (which register) and their ground, cliargs
    assert graph()['cli'] == {'cliargs', 'cli_cache', 'cli_refiner', 'cli_detr', 'cli_boxgen'}
    assert graph()['cliargs'] == {'atomic'}


def test_no_private_name_crosses_a_module():
    crossing = [f"{m}.py:{line} imports {t}.{n}" for m in MODULES for t, names, line in imports(m)
                for n in names if n.startswith('_') and not n.startswith('__')]
    assert not crossing, '\n'.join(crossing)


def test_train_is_a_facade_nothing_imports():
    users = sorted(m for m, targets in graph().items() if 'train' in targets)
    assert users == [], users
    from boxrefine import config, engine, refiner, train
    assert train.TrainConfig is config.TrainConfig and train.fit is engine.fit
    assert train.predict_refiner is refiner.predict_refiner
