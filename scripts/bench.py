#!/usr/bin/env python
"""Same as `ffrun-bench` (see ffrun/apps/bench.py): efficiency against the matmul ceiling, speedup against a
plain PyTorch loop, vectorized sweeps.

    python scripts/bench.py                                  # image protocol on this machine's device
    python scripts/bench.py --tasks image,shape,mri,nerf --vectorized 8 --json bench.json
"""

import sys

from ffrun.apps.bench import main

if __name__ == "__main__":
    sys.exit(main())
