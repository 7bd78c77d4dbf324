"""Does flowops' device-detector (lib/flowops/ingest/device_index.py) answer as device-detector does, on every agent
of device-detector's own test data (about 38,000: phones, tablets, TVs, feature phones, bots, desktops)? Prints the
count, the agents that differ and both timings (the stock one takes about 5 minutes here).

    .venv/bin/python -m tests.validation.device_index

The test suite compares the two on a sample (tests/unit/test_device_index.py).
"""

from __future__ import annotations

import time

from device_detector import DeviceDetector as Stock

from flowops.ingest.device_index import DeviceDetector
from tests.unit.test_device_index import answer, fixture_agents


def main() -> int:
    agents = fixture_agents(every=1, files=1)
    timings, answers = {}, {}
    for name, detector in (("device-detector", Stock), ("flowops", DeviceDetector)):
        start = time.perf_counter()
        answers[name] = [answer(detector, agent) for agent in agents]
        timings[name] = time.perf_counter() - start
    differ = [(agent, stock, ours) for agent, stock, ours
              in zip(agents, answers["device-detector"], answers["flowops"], strict=True) if stock != ours]
    slow, fast = timings["device-detector"], timings["flowops"]
    print(f"{len(agents):,} agents, {len(differ)} answered differently; device-detector {slow:.1f} s, flowops "
          f"{fast:.1f} s ({slow / fast:.1f}x)")
    for agent, stock, ours in differ[:20]:
        print(f"  {agent!r}: device-detector {stock}, flowops {ours}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
