#!/usr/bin/env python3
"""Python half of tests/tensorboard_cli.rs: reads a run directory's TensorBoard event files with
TensorBoard's own reader and prints one JSON object:

  scalars   {tag: [[step, value], ...]} as TensorBoard shows the run: EventAccumulator over the
            folder (every event file in name order, orphaned steps purged at a SessionLog START,
            no sampling), the way `tensorboard --logdir` loads it
  files     per event file in name order: {"name", "version" (the first event's file_version),
            "steps" (the step of every summary event as written), "starts" (the step of every
            SessionLog START)}

Usage: tensorboard_check.py RUN_DIR
"""

import glob
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2


def scalars(run):
    acc = EventAccumulator(run, size_guidance={"scalars": 0}, purge_orphaned_data=True)
    acc.Reload()
    return {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def files(run):
    out = []
    for path in sorted(glob.glob(os.path.join(run, "events.out.tfevents.*"))):
        events = list(EventFileLoader(path).Load())
        out.append(
            {
                "name": os.path.basename(path),
                "version": events[0].file_version if events else None,
                "steps": [e.step for e in events if e.HasField("summary")],
                "starts": [
                    e.step
                    for e in events
                    if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START
                ],
            }
        )
    return out


if __name__ == "__main__":
    run = sys.argv[1]
    print(json.dumps({"scalars": scalars(run), "files": files(run)}))
