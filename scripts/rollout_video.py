"""Render a recorded locomotion episode (trace_<guide>.json of `diffuser plan locomotion`) beside its plans.

    python scripts/rollout_video.py runs/locomotion/hopper-medium/trace_value.json --out assets/hopper_rollout.gif \
        --segments 3 --size 240 180

Each segment shows the plan made at one step (right) next to the states executed from that step (left).
"""

from __future__ import annotations

import argparse
import json

from diffuser.locomotion_job import trace_segments
from diffuser.viz.mujoco_video import plan_rollout_video


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    p.add_argument("--out", required=True, help=".mp4 or .gif")
    p.add_argument("--segments", type=int, help="only the first N plans")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--fps", type=int, default=30)
    args = p.parse_args(argv)
    trace = json.load(open(args.trace))
    segments = trace_segments(trace, trace["horizon"])[: args.segments]
    print(plan_rollout_video(trace["env_id"], segments, args.out, fps=args.fps, size=tuple(args.size)))


if __name__ == "__main__":
    main()
