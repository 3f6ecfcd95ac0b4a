"""Run by test_orphans.py in its own process: start report workers, print their PIDs, wait.

The test then kills this process (SIGKILL or SIGTERM) and checks that the workers and
multiprocessing's resource tracker are gone.
"""

import os
import sys
import time

from analysis.report.jobs import _exit_on_sigterm, _process_pool

if __name__ == "__main__":
    with _exit_on_sigterm(), _process_pool(2) as pool:
        futures = [pool.submit(time.sleep, 120) for _ in range(2)]
        while len(pool._processes) < 2:
            time.sleep(0.05)
        print(" ".join(str(pid) for pid in pool._processes), flush=True)
        time.sleep(120)
    sys.exit(os.EX_OK)
