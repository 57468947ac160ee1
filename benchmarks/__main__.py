"""``python -m benchmarks`` (from the repository root): run every benchmark."""

import sys

from benchmarks.run import main

sys.argv[0] = "python -m benchmarks"  # for --help's usage line
sys.exit(main())
