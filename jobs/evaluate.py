"""Ray job: mteb evaluation on local or hub tasks, or --compare finished runs (the `evaluate:` section).

    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/cpu-tiny.yaml [--set key=value ...]

A wrapper of `python -m synthembed evaluate` (synthembed/cli.py: paths, logging, errors and exit codes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # a checkout without an install

from synthembed.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
