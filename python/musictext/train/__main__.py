"""``python -m musictext.train``: the training program (see musictext.train.run)."""

import sys

from musictext.train.run import main

sys.exit(main())
