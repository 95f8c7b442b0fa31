"""``python -m pipeline.report`` (and the ``bert-wwm-report`` console script): an HTML report
about a finished output. The tool is ``pipeline.tools.report``; this module only starts it."""
import sys

from pipeline.tools.report.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
