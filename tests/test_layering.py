"""The architecture's arrows point one way (STYLE.md): checked on the import statements."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FRAMEWORKS = {"apache_beam", "tensorflow", "torch", "keras", "keras_hub", "transformers"}


def imports(package):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield path, node.module


def offenders(package, forbidden):
    return sorted({f"{p.relative_to(ROOT)}: {name}" for p, name in imports(package)
                   if name.split(".")[0] in forbidden or any(
                       name == f or name.startswith(f + ".") for f in forbidden)})


def test_core_is_pure_python():
    # ltp is allowed: the segmenter wraps it; it must not pull Beam, TF or torch into the core
    # (the legacy model loads without the ltp package's torch-based code).
    assert offenders("pipeline/core", FRAMEWORKS | {"pipeline.beam", "pipeline.writers"}) == []


def test_writers_depend_on_schema_not_on_core_or_beam():
    # The instance columns (pipeline.core.instance) are what the writers write: the one part
    # of the core they may know.
    found = offenders("pipeline/writers", FRAMEWORKS | {"pipeline.core", "pipeline.beam"})
    assert [f for f in found if not f.endswith(": pipeline.core.instance")] == []


# The contract modules directly under pipeline/; every other module there is an entry point
# (python -m pipeline.run, pipeline.vocab, ...), which may use the Beam layer (its filesystems).
CONTRACTS = {"schema.py", "versions.py", "__init__.py"}


def test_nothing_imports_the_beam_layer_but_the_entry_points():
    bad = [f"{p.relative_to(ROOT)}: {name}" for package in ("pipeline", "trainer")
           for p, name in imports(package)
           if name.startswith("pipeline.beam") and "beam" not in p.parts
           and not (p.parent == ROOT / "pipeline" and p.name not in CONTRACTS)]
    assert bad == []


def test_trainers_read_the_shared_schema_not_pipeline_internals():
    assert offenders("trainer", {"pipeline.core", "pipeline.beam", "pipeline.writers",
                                 "apache_beam"}) == []
