"""Run train.py's main under a fault-injection hook: SIGKILL itself at the Nth step that changes the run folder.

    python kill_worker.py POINTS_FILE N [train.py flags]   (N = -1 never kills: it records every step's name)
"""
import os
import signal
import sys

from timm_frozenmix.cli.train import main
from timm_frozenmix.io import run_folder

points_file, kill_at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
seen = []


def kill_at_the_nth_step(name):
    if len(seen) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    seen.append(name)
    with open(points_file, 'a') as f:
        f.write(name + '\n')


run_folder.fault_injection = kill_at_the_nth_step
main(argv)
