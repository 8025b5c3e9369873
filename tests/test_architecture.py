"""The package's structure (docs/contributing.rst, "Layout"): the estimator decides the
model kind once, no family imports the registry, and the import graph has no circle."""

import ast
import inspect
from pathlib import Path

import pytest

import flowpca
from flowpca import NormalizingFlowPCA
from flowpca.components import component_map_from_state, make_component_map
from flowpca.flows import InjectiveFlow, LinearFlow, MLPFlow, NSFFlow

PACKAGE = Path(flowpca.__file__).parent
_KIND_TESTS = ("is_linear", "is_injective", "ZukoFlow")


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph():
    """Module -> flowpca modules it imports, at module level or inside functions."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                    if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in targets if target in graph} - {name}
    return graph


def test_import_graph_has_no_circle():
    graph = _import_graph()

    def nested(a, b):  # a package and its own submodules import each other by design
        return a.startswith(b + ".") or b.startswith(a + ".")

    def reaches(start, goal, seen):
        for module in graph[start]:
            if nested(module, start) or module in seen:
                continue
            if module == goal or reaches(module, goal, seen | {module}):
                return True
        return False

    circles = [name for name in graph
               if any(not nested(name, target) and reaches(target, name, {target})
                      for target in graph[name])]
    assert not circles, f"modules on an import circle: {sorted(circles)}"
    assert len(graph) > 20


def test_no_family_imports_the_registry():
    graph = _import_graph()
    families = [name for name in graph if name.startswith("flowpca.flows.")
                and name != "flowpca.flows._families"]
    importers = [name for name in families if "flowpca.flows._families" in graph[name]]
    assert not importers


def test_public_methods_never_test_the_model_kind():
    # fit decides once (the component map); the public methods delegate to it.
    for name, method in vars(NormalizingFlowPCA).items():
        if name.startswith("_") and name != "__init__" or not inspect.isfunction(method):
            continue
        source = inspect.getsource(method)
        body = source.split('"""')[-1] if '"""' in source else source
        found = [word for word in _KIND_TESTS if word in body]
        assert not found, f"NormalizingFlowPCA.{name} tests the model kind: {found}"


@pytest.mark.parametrize("flow, expected", [
    (LinearFlow(3), "linear"), (MLPFlow(3, n_layers=1), "projected"),
    (NSFFlow(3, n_layers=1, hidden_features=(4,)), "integrated"),
    (InjectiveFlow(3, 2, n_layers=1, latent_layers=1), "latent"),
])
def test_the_flow_traits_choose_the_component_map(flow, expected):
    component_map = make_component_map(flow)
    assert component_map.name == expected
    assert make_component_map(flow, component_map="projected").name == (
        "projected" if expected in ("projected", "integrated") else expected)
    # A map's state is plain values and rebuilds the same map.
    rebuilt = component_map_from_state(component_map.get_state())
    assert type(rebuilt) is type(component_map) and vars(rebuilt) == vars(component_map)


def test_a_component_map_must_implement_its_hooks():
    from flowpca.components import ComponentMap

    class Partial(ComponentMap):
        name = "partial"

        def transform(self, flow, Xc):
            return Xc

    with pytest.raises(TypeError, match="abstract"):
        Partial()
