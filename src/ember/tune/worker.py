"""`python -m ember.tune.worker STUDY_DIR INDEX OPTIONS_JSON`: one trial process of `ember tune`."""

from __future__ import annotations

import sys

from ember.tune.runner import worker_main

if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
