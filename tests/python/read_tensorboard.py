"""Reads a run's TensorBoard event files with the tensorboard package and prints every
scalar series as JSON: {tag: [[step, value], ...]}.

usage: read_tensorboard.py RUN_LOG_DIR"""
import json
import sys

from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

multiplexer = EventMultiplexer()
multiplexer.AddRunsFromDirectory(sys.argv[1])
multiplexer.Reload()
series = {}
for run, tags in multiplexer.Runs().items():
    for tag in tags.get("scalars", []):
        for event in multiplexer.Scalars(run, tag):
            series.setdefault(tag, []).append([event.step, event.value])
print(json.dumps({tag: sorted(points) for tag, points in series.items()}))
