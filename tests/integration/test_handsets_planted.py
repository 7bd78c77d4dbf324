"""On the demo's generated data, the handsets ingest identifies agree with the ones the generator planted: the
TAC table's where it knows the TAC, and the user agent's (device data and the classes rules) where it does not."""

from __future__ import annotations

import pytest

from flowops.ingest.terminals import normal_brand
from flowops.synth.catalog import GENERATIONS, load_devices

pytestmark = pytest.mark.slow


def test_identified_handsets_agree_with_the_planted_ones(demo_ctx):
    devices = load_devices()
    planted = {tac: (normal_brand(brand), smart, f"{gen}G") for tac, brand, smart, gen in
               zip(devices.tac, devices.brand, devices.smart, devices.gen, strict=True)}
    assert {g for _, _, g in planted.values()} <= set(GENERATIONS)
    rows = (demo_ctx.lake.read("silver/device_daily").select("tac", "brand", "is_smart", "network_gen",
                                                            "terminal_source").distinct().collect())
    by_agent = [r for r in rows if r.terminal_source == "user_agent" and r.tac in planted]
    by_tac = [r for r in rows if r.terminal_source == "tac"]
    assert by_agent and by_tac, "the demo has handsets of both kinds"
    assert all(normal_brand(r.brand) == planted[r.tac][0] for r in by_tac)
    # A brand read from an agent is the planted one (some agents name no handset, and the generator's catalogue
    # has a model code the device data does not know: those stay without a brand, never with a wrong one).
    named = [r for r in by_agent if r.brand]
    assert named and all(r.brand == planted[r.tac][0] for r in named), [(r.tac, r.brand, planted[r.tac]) for r in named]
    assert len({r.tac for r in named}) >= 0.6 * len({r.tac for r in by_agent})
    wrong_smart = [(r.tac, r.brand, r.is_smart) for r in named if bool(r.is_smart) != bool(planted[r.tac][1])]
    assert not wrong_smart, wrong_smart
    # Generation from a user agent is a rule of thumb (4G unless the name says 5G): never 2G for a smartphone.
    assert all(r.network_gen != "2G" for r in by_agent if r.is_smart)
