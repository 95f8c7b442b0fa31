"""``python -m pipeline.verify`` (and the ``bert-wwm-verify`` console script): every file of an
output checked against its manifest. The tool is ``pipeline.tools.verify``; this module only
starts it."""
import sys

from pipeline.tools.verify import main

if __name__ == "__main__":
    sys.exit(main())
