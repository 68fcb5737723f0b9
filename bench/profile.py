"""Summarise a py-spy collapsed-stack profile (`bench.run --profile` writes them).

`python -m bench.profile bench/results/raw/<run>/<point>.pyspy.txt [--top 30] [--grep chat/]`

Prints the functions with the most samples *on the stack* (inclusive, each counted
once per sample) and *at the top of the stack* (self). The same file loads into
https://www.speedscope.app or flamegraph.pl for a picture.
"""

from __future__ import annotations

import argparse
from collections import Counter


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            frames, _, count = line.rpartition(" ")
            stacks.append((frames.split(";"), int(count)))
    return stacks


def summarise(stacks, top: int, grep: str | None) -> str:
    total = sum(n for _, n in stacks) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks:
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"\n-- {title} --")
        rows = [(f, n) for f, n in counter.most_common() if not grep or grep in f]
        for frame, n in rows[:top]:
            out.append(f"{100 * n / total:6.1f}%  {frame}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--grep", help="only frames containing this (e.g. chat/ or django/db)")
    args = p.parse_args()
    print(summarise(load(args.path), args.top, args.grep))


if __name__ == "__main__":
    main()
