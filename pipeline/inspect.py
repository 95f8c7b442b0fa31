"""``python -m pipeline.inspect`` (and the ``bert-wwm-inspect`` console script): instances of a
finished output as text. The tool is ``pipeline.tools.inspect``; this module only
starts it."""
import sys

from pipeline.tools.inspect import main

if __name__ == "__main__":
    sys.exit(main())
