"""When a command's memory peaks: its resident set size sampled every 50 ms, as `make bench` samples.

    python benchmarks/memory_timeline.py COMMAND [ARGS...]

Prints the peak, when it came (seconds after start, of the whole run), and a dozen samples.
"""

import subprocess
import sys
import time

import psutil


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched, started, samples = psutil.Process(proc.pid), time.time(), []
    while proc.poll() is None:
        try:
            samples.append((time.time() - started, watched.memory_info().rss >> 20))
        except psutil.Error:  # it ended between the poll and the read
            break
        time.sleep(0.05)
    peak_at, peak = max(samples, key=lambda s: s[1])
    print(f"exit {proc.returncode}; peak {peak} MiB at {peak_at:.1f} s of {samples[-1][0]:.1f} s")
    for at, mib in samples[::max(1, len(samples) // 12)]:
        print(f"  {at:5.1f} s  {mib} MiB")


if __name__ == "__main__":
    main()
