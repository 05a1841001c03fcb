"""Fault injection for the multi-process tests, loaded only when a test puts this folder on
PYTHONPATH: `EMBER_TEST_FAULT=ACTION:RANK:STEP` makes that rank, on the job's first attempt,
at the start of optimizer step STEP + 1, either SIGKILL itself (`kill`), raise (`raise`) or
hang (`hang`, to exercise the collective timeout). The library itself reads no such flag.
"""

import os

_spec = os.environ.get("EMBER_TEST_FAULT")
if _spec and os.environ.get("RANK") is not None:
    action, rank, step = _spec.split(":")
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if os.environ["RANK"] == rank and first_attempt:
        import signal
        import time

        import ember.training.loop as loop

        original = loop.lr_at

        def lr_at(current: int, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if current == int(step):
                if action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif action == "raise":
                    raise RuntimeError(f"injected failure on rank {rank} at step {current + 1}")
                elif action == "hang":
                    time.sleep(600)
            return original(current, *args, **kwargs)

        loop.lr_at = lr_at
