"""The architecture's arrows point one way, checked on the import statements (every import,
nested ones included).

The rooms of ``pipeline/`` and what each may import, from the bottom up:

- ``common/``: leaf helpers with one meaning everywhere (paths, sizes, digests, TFRecord
  framing): no other pipeline module, no framework;
- ``schema.py``, ``versions.py``: the contracts (features, files, manifest; versions):
  of the pipeline, only ``common``;
- ``core/``: pure Python, no Beam, TF or torch: text, segmentation, WordPiece, instances,
  masking; nor any room above it; it reads no environment variables and takes no file locks
  (the default segmenter's cache and build are ``default_segmenter``'s);
- ``default_segmenter/``: builds the built-in LTP model (People's Daily, training, cache,
  evaluation): the core and the contracts, no framework;
- ``writers/``: the output's files: the contracts and the instance columns of the core;
- ``readers/``: an output read back: the contracts only (Beam's filesystems, imported when a
  path is remote, are the one framework);
- ``beam/``: the job on Beam: any room below; nothing but the entry points imports it;
- the entry points: ``pipeline/run.py``, the thin ``python -m pipeline.<tool>`` modules under
  ``pipeline/`` and the user tools in ``tools/``; nothing else imports ``tools``;
- ``dev/``: developer utilities; nothing in the pipeline imports them.

The trainers read the shared schema, not the pipeline's internals (but the masking function,
``pipeline.core.masking``, which they share with the pipeline).
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FRAMEWORKS = {"apache_beam", "tensorflow", "torch", "keras", "keras_hub", "transformers"}
# The contract modules directly under pipeline/; every other module there is an entry point
# (python -m pipeline.run, pipeline.vocab, ...), which may use the Beam layer.
CONTRACTS = {"schema.py", "versions.py", "__init__.py"}


def imports(package):
    root = ROOT / package
    for path in ([root] if root.is_file() else root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module == "pipeline":  # from pipeline import schema: the module
                    for alias in node.names:
                        yield path, f"pipeline.{alias.name}"
                else:
                    yield path, node.module


def is_under(name, modules):
    return any(name == m or name.startswith(m + ".") for m in modules)


def offenders(package, forbidden):
    return sorted({f"{p.relative_to(ROOT)}: {name}" for p, name in imports(package)
                   if name.split(".")[0] in forbidden or is_under(name, forbidden)})


def outside(package, allowed):
    """The pipeline modules ``package`` imports that are not under ``allowed``."""
    return sorted({f"{p.relative_to(ROOT)}: {name}" for p, name in imports(package)
                   if is_under(name, {"pipeline"}) and not is_under(name, allowed)})


def is_entry_point(path):
    return (path.parent == ROOT / "pipeline" and path.name not in CONTRACTS) or \
        (ROOT / "pipeline" / "tools") in path.parents


def test_common_is_a_leaf():
    assert offenders("pipeline/common", FRAMEWORKS) == []
    assert outside("pipeline/common", {"pipeline.common"}) == []


def test_contracts_depend_on_common_only():
    # (schema.tf_feature_spec imports TensorFlow when a TF trainer calls it.)
    for name in CONTRACTS - {"__init__.py"}:
        assert outside(f"pipeline/{name}", {"pipeline.common"}) == []


def test_core_is_pure_python():
    # ltp is allowed: the segmenter wraps it; it must not pull Beam, TF or torch into the core
    # (the legacy model loads without the ltp package's torch-based code).
    assert offenders("pipeline/core", FRAMEWORKS) == []
    assert outside("pipeline/core", {"pipeline.core", "pipeline.schema", "pipeline.versions",
                                     "pipeline.common"}) == []


def test_core_reads_no_environment_and_takes_no_locks():
    found = []
    for path in (ROOT / "pipeline" / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "flock"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.attr}")
    found += offenders("pipeline/core", {"fcntl"})
    assert found == []


def test_the_default_segmenters_build_stays_off_the_frameworks_and_the_job():
    # It runs in Beam's workers (a first use) and in the worker image's build, with ltp only.
    assert offenders("pipeline/default_segmenter", FRAMEWORKS) == []
    assert outside("pipeline/default_segmenter", {
        "pipeline.default_segmenter", "pipeline.core", "pipeline.schema", "pipeline.versions",
        "pipeline.common"}) == []


def test_writers_depend_on_schema_not_on_core_or_beam():
    # The instance columns (pipeline.core.instance) are what the writers write: the one part
    # of the core they may know.
    assert offenders("pipeline/writers", FRAMEWORKS) == []
    assert outside("pipeline/writers", {"pipeline.writers", "pipeline.schema",
                                        "pipeline.versions", "pipeline.common",
                                        "pipeline.core.instance"}) == []


def test_readers_depend_on_the_contracts_only():
    assert offenders("pipeline/readers", FRAMEWORKS - {"apache_beam"}) == []
    assert outside("pipeline/readers", {"pipeline.readers", "pipeline.schema",
                                        "pipeline.common"}) == []


def test_nothing_imports_the_beam_layer_but_the_entry_points():
    bad = [f"{p.relative_to(ROOT)}: {name}" for package in ("pipeline", "trainer")
           for p, name in imports(package)
           if is_under(name, {"pipeline.beam"}) and "beam" not in p.parts
           and not is_entry_point(p)]
    assert bad == []


def test_nothing_imports_the_tools_but_the_entry_points():
    bad = [f"{p.relative_to(ROOT)}: {name}" for package in ("pipeline", "trainer")
           for p, name in imports(package)
           if is_under(name, {"pipeline.tools"}) and not is_entry_point(p)]
    assert bad == []


def test_nothing_imports_the_developer_utilities():
    bad = [f"{p.relative_to(ROOT)}: {name}" for package in ("pipeline", "trainer")
           for p, name in imports(package)
           if is_under(name, {"pipeline.dev"}) and "dev" not in p.parts]
    assert bad == []


def test_trainers_read_the_shared_schema_not_pipeline_internals():
    # The one masking function (pipeline.core.masking) is shared on purpose: the trainers'
    # dynamic masks and the pipeline's static masks come from the same code.
    found = offenders("trainer", {"pipeline.core", "pipeline.beam", "pipeline.writers",
                                  "pipeline.default_segmenter", "pipeline.tools",
                                  "pipeline.dev", "apache_beam"})
    assert [f for f in found if not f.endswith(": pipeline.core.masking")] == []
