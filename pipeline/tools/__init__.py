"""The command lines a user runs beside the job, and what every command line shares.

Tools (each a ``main(argv)``; ``python -m pipeline.inspect``, ``pipeline.verify``,
``pipeline.report`` and ``pipeline.vocab`` are thin entry modules that call them, as are the
``bert-wwm-*`` console scripts):

- ``inspect``: instances of a finished output as text or HTML;
- ``verify``: every file of an output against its manifest;
- ``report``: one HTML page of statistics and plots about an output;
- ``vocab``: a WordPiece vocabulary trained on a corpus;
- ``ltp_model`` (``python -m pipeline.tools.ltp_model``): the built-in segmenter: build it
  ahead of a job, print its directory, evaluate or benchmark it, segment some texts.

Shared by them and by the job's launcher (``pipeline/run.py``): ``cli`` (``--output_dir`` and
the filesystem flags of the tools that read an output), ``console`` (what an entry point
prints), ``progress`` (progress lines). Developer utilities are in ``pipeline.dev``.
"""
