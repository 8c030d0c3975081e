"""Ray job: embed a file of texts on Ray Data into Parquet (--input, --output, the `embed:` section).

    ray job submit --working-dir . -- python jobs/embed.py --config configs/cpu-tiny.yaml [--set key=value ...]

A wrapper of `python -m synthembed embed` (synthembed/cli.py: paths, logging, errors and exit codes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # a checkout without an install

from synthembed.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
