"""The job on Beam: flags (``options``), the steps (``dofns``, ``transforms``, ``sinks``),
files on any Beam filesystem (``fs``), what the job may do to --output_dir (``output_dir``), the
piece files that hold instances between the job's two halves (``pieces``), and the runners'
fixes (``direct_runner``, ``dask_runner``). Only the entry points import this layer."""
