"""`ember audit RUN`: membership-inference attacks on a finished run (no torch import until run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the `audit` subcommand to the `ember` parser's subparsers."""
    a = sub.add_parser("audit", help="membership-inference attack on a run: how much it leaks about its "
                                     "training samples (audit.json, report section)")
    a.add_argument("run_dir", type=Path, help="a run folder")
    a.add_argument("--split", default="test", choices=["test", "val"], help="held-out split of non-members")
    a.add_argument("--shadow", action="store_true", help="also run the shadow-model attack (trains one model)")
    a.add_argument("--lira", type=int, default=0, metavar="N",
                   help="also run the likelihood-ratio attack (LiRA) with N shadow models (even, e.g. 8; "
                        "each trains the recipe once)")
    a.add_argument("--seed", type=int, default=0, help="which members are scored when there are more of them")
    a.add_argument("--max-samples", type=int, default=2000, help="members (and non-members) scored, at most")
    a.add_argument("--json", action="store_true", help="print audit.json instead of a summary")


def run(args: argparse.Namespace) -> int:
    """Run the attacks and print their figures."""
    import json

    from ember.errors import ConfigError
    from ember.privacy.audit import audit, format_audit

    if args.max_samples < 1:
        raise ConfigError(f"--max-samples: got {args.max_samples}; must be >= 1")
    result = audit(args.run_dir, split=args.split, seed=args.seed, max_per_side=args.max_samples,
                   shadow=args.shadow, lira=args.lira)
    print(json.dumps(result, indent=2) if args.json else format_audit(result))
    return 0
