"""Everything in conf/ besides pipeline.yml, loaded and checked once per command and passed down to the steps.

`Definitions.load` reads the app rules, the TAC reference, the tag library, the segment rules, the product
catalogue, the channels with the contact policy, the scenario templates and the models' settings, checking each
against the others (a rule naming an unknown tag, a scenario naming an unknown product or channel, a model feature
that is not a tag...). No job re-reads conf/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flowops.ingest.apps import AppRules
from flowops.ingest.terminals import HandsetClasses, Terminal, load_reference
from flowops.models.churn import ModelsConf, load_models
from flowops.products import Catalogue, load_catalogue
from flowops.scenarios.templates import Channels, Scenario, check_policy_tags, load_channels, load_scenarios
from flowops.segments import Segments, load_segments
from flowops.tags.definitions import TagLibrary, load_library


@dataclass(frozen=True)
class Definitions:
    apps: AppRules
    terminals: dict[str, Terminal]
    handset_classes: HandsetClasses
    library: TagLibrary
    segments: Segments
    catalogue: Catalogue
    channels: Channels
    scenarios: list[Scenario]
    models: ModelsConf

    @classmethod
    def load(cls, conf_dir: str | Path) -> Definitions:
        library = load_library(conf_dir)
        catalogue = load_catalogue(conf_dir)
        channels = load_channels(conf_dir)
        check_policy_tags(channels, library)
        return cls(apps=AppRules.load(conf_dir), terminals=load_reference(conf_dir),
                   handset_classes=HandsetClasses.load(conf_dir), library=library,
                   segments=load_segments(conf_dir, library), catalogue=catalogue, channels=channels,
                   scenarios=load_scenarios(conf_dir, library, catalogue, channels),
                   models=load_models(conf_dir, library))
