"""``python -m pipeline.vocab`` (and the ``bert-wwm-vocab`` console script): a WordPiece vocabulary
trained on a corpus. The tool is ``pipeline.tools.vocab``; this module only
starts it."""
import sys

from pipeline.tools.vocab import main

if __name__ == "__main__":
    sys.exit(main())
