"""Scenario templates (`conf/scenarios/*.yml`) and channels with the contact policy (`conf/channels.yml`).

Everything is validated before any Spark job: unknown tags, products or channels, a channel in the wrong
mode, overlapping waves, a message that reads an unknown variable or does not parse — each is one
`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, model_validator

from flowops.config import StrictModel, config_files, load_yaml, validate
from flowops.errors import ConfigError
from flowops.products import Catalogue
from flowops.segments import Stage
from flowops.tags.definitions import NAME, TagLibrary, sql_identifiers, unsafe_sql

Mode = Literal["active", "passive"]
Kind = Literal["sms", "call", "manager", "display"]
Fit = Literal["cheapest_data_plan", "booster_for_overflow", "idle_pack_for_idle", "plan_upgrade", "fixed"]
# Product types each fit may offer.
FIT_TYPES: dict[str, tuple[str, ...]] = {
    "cheapest_data_plan": ("data_plan",), "booster_for_overflow": ("booster",), "idle_pack_for_idle": ("idle_pack",),
    "plan_upgrade": ("base_plan",), "fixed": ("data_plan", "booster", "idle_pack", "app", "terminal", "base_plan"),
}
# Columns of gold/flow_stages a target rule may read besides the tags.
STAGE_COLUMNS = ("stage", "reason", "flow_type")
# What a message template may use besides the subscriber's tags.
MESSAGE_VARIABLES = frozenset({"product", "offers", "incentive", "saving_yuan", "extra_cost_yuan", "window_start",
                               "window_end", "scenario", "channel"})
ENVIRONMENT = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


# ---------------------------------------------------------------------------------------------------- channels
class ChannelModel(StrictModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    mode: Mode
    kind: Kind                               # what the export carries (see steps/target.py EXPORT_COLUMNS)
    cost_yuan: float = Field(ge=0)           # per contact
    daily_capacity: int | None = Field(default=None, ge=1)   # contacts per day; none = unlimited
    reach: Literal["any", "smartphone", "account_manager"] = "any"
    # Value-cost matching: when set, only these value tiers, or products at or above min_product_yuan.
    value_tiers: list[str] | None = None
    min_product_yuan: float | None = Field(default=None, ge=0)
    # Expected incremental conversion of one contact (ordered because of it, beyond those who would have ordered
    # anyway), before the channel has been measured: the prior the measured uplift of earlier months updates.
    uplift_prior: float = Field(ge=0, lt=1)
    trigger: str | None = None               # passive channels: the touch that shows the offer
    max_chars: int | None = Field(default=None, ge=1)   # one message segment (SMS: 70 Chinese characters)


class ContactsModel(StrictModel):
    active: int = Field(1, ge=0)
    passive: int = Field(1, ge=0)


class UpliftModelSettings(StrictModel):
    """The per-subscriber uplift model (models/uplift.py): trained on the campaigns of earlier months (the
    contacted against every member not contacted), used instead of the per scenario x channel estimates only where
    it beat them on a held-out later month's randomised comparison."""

    use: Literal["auto", "off"] = "auto"
    numeric: list[str] = Field(default_factory=list)        # tags the model reads
    categorical: list[str] = Field(default_factory=list)    # scenario and channel are always added
    min_members: int = Field(2000, ge=1)   # members of the training months below which no model is tried
    reg_param: float = Field(1e-5, ge=0)   # L2 penalty of each arm's logistic regression (Spark's, per row)


class PolicyModel(StrictModel):
    contacts_per_cycle: ContactsModel = ContactsModel()   # per subscriber and campaign month, across scenarios
    immunity_rounds: int = Field(3, ge=1)   # unconverted delivered cycles of an offer family before immunity
    max_offers: int = Field(3, ge=1)
    credit_cap_share_of_bill: float = Field(0.5, gt=0, le=1)
    organic_prior: float = Field(0.02, ge=0, lt=1)   # share of a scenario's candidates who order unprompted
    prior_strength: float = Field(20, gt=0)   # pseudo-members behind organic_prior; the most a rate is pooled
    # What a contact is worth: "uplift" = incremental conversions x margin less every cost (the policy);
    # "response" = conversions of the contacted (organic buyers included) x margin: the old ranking, kept as the
    # baseline the validation compares with.
    objective: Literal["uplift", "response"] = "uplift"
    # What the allocation maximises over the contacts worth making (a positive value under the objective, or care):
    # "value" = their expected value in yuan; "orders" = the conversions they add (the campaign's order count, the
    # KPI many marketing teams are set), so a cheap offer that changes behaviour beats a dear one that changes less.
    maximise: Literal["value", "orders"] = "value"
    exploration_share: float = Field(0.05, ge=0, le=0.5)   # treated-arm units given a random worthwhile channel
    uplift_model: UpliftModelSettings = UpliftModelSettings()
    vip_tiers: list[str] = Field(default_factory=lambda: ["vip"])
    vip_channel: str = "manager"
    default_active: str = "sms"


class ChannelsModel(StrictModel):
    policy: PolicyModel = PolicyModel()
    channels: list[ChannelModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ChannelsModel:
        ids = [c.id for c in self.channels]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"channels: ids must be unique; repeated: {', '.join(twice)}")
        by_id = {c.id: c for c in self.channels}
        for key, mode in (("vip_channel", "active"), ("default_active", "active")):
            chosen = getattr(self.policy, key)
            if chosen not in by_id:
                raise ValueError(f"policy.{key}: unknown channel {chosen!r} (channels: {', '.join(ids)})")
            if by_id[chosen].mode != mode:
                raise ValueError(f"policy.{key}: channel {chosen} is {by_id[chosen].mode}, not {mode}")
        return self


@dataclass(frozen=True)
class Channels:
    policy: PolicyModel
    channels: tuple[ChannelModel, ...]
    source: str

    def __getitem__(self, channel_id: str) -> ChannelModel:
        return {c.id: c for c in self.channels}[channel_id]

    def __contains__(self, channel_id: object) -> bool:
        return any(c.id == channel_id for c in self.channels)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.channels]


def check_policy_tags(channels: Channels, library: TagLibrary) -> None:
    """The uplift model's features must be tags (or the stage columns): a typo fails before any job runs."""
    settings = channels.policy.uplift_model
    for key in ("numeric", "categorical"):
        unknown = [n for n in getattr(settings, key) if n not in library and n not in STAGE_COLUMNS]
        if unknown:
            raise ConfigError(f"{channels.source}: policy.uplift_model.{key}: unknown tag(s) {', '.join(unknown)} "
                              "(see `flowops tags --catalog`)")


def load_channels(conf_dir: str | Path) -> Channels:
    """Read and validate `conf/channels.yml`."""
    path = Path(conf_dir) / "channels.yml"
    if not path.is_file():
        raise ConfigError(f"channels and contact policy {path} not found")
    model = validate(ChannelsModel, load_yaml(path), path)
    return Channels(model.policy, tuple(model.channels), str(path))


# --------------------------------------------------------------------------------------------------- scenarios
class WaveModel(StrictModel):
    wave: int = Field(ge=1)
    active: str | None = None      # channel pushed to everyone the wave targets
    passive: str | None = None     # channel shown when the subscriber touches it
    start_day: int = Field(ge=1, le=28)
    feedback_day: int | Literal["end"]
    # Channel for those the wave's channels cannot carry, and, in the next wave, for those whose contact in this
    # wave was not delivered (the seed's "SMS fails -> mobile-app hall").
    fallback: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> WaveModel:
        if not self.active and not self.passive:
            raise ValueError("a wave needs an active or a passive channel")
        if self.feedback_day != "end" and not self.start_day <= self.feedback_day <= 31:
            raise ValueError(f"feedback_day {self.feedback_day} is before start_day {self.start_day}")
        return self

    def window(self, campaign_month: str) -> tuple[dt.date, dt.date]:
        """First and last day of the wave in the campaign month."""
        year, month = map(int, campaign_month.split("-"))
        last = calendar.monthrange(year, month)[1]
        end = last if self.feedback_day == "end" else min(int(self.feedback_day), last)
        return dt.date(year, month, self.start_day), dt.date(year, month, end)

    @property
    def last_day(self) -> int:
        return 31 if self.feedback_day == "end" else int(self.feedback_day)


class ProductModel(StrictModel):
    fit: Fit
    ids: list[str] = Field(default_factory=list)   # fixed: the products offered (at most policy.max_offers)
    allow_extra_cost: bool = False   # offer even when it costs more than it saves; messages must say by how much


class IncentiveModel(StrictModel):
    kind: Literal["none", "credit", "coupon", "trial_data", "free_minutes", "double_data", "gift"] = "none"
    yuan: float = Field(0, ge=0)          # credit / coupon value
    mb: int | None = Field(default=None, ge=1)        # trial data
    minutes: int | None = Field(default=None, ge=1)   # free minutes
    cost_yuan: float | None = Field(default=None, ge=0)   # what it costs the operator, when not `yuan`
    text: str = ""                        # how messages name it, e.g. 5元话费


class HighValueModel(StrictModel):
    tiers: list[str] = Field(min_length=1)   # value_tier values
    channel: str                             # the (dearer) active channel they get when they state no preference


class StrategyModel(StrictModel):
    follow_preference: bool = True        # route by the channel_preference tag first
    vip_to_manager: bool = True           # VIPs without a preference go to their account manager
    high_value: HighValueModel | None = None   # then these tiers to a high-cost channel
    max_attempts: int = Field(2, ge=1)    # contacts of this scenario per subscriber and cycle, all waves and modes


class EvaluationModel(StrictModel):
    # An order counts for a contact when placed within this many days of the contact day (the contact day
    # included), and never after the wave's last day; default: until the wave's last day.
    attribution_days: int | None = Field(default=None, ge=1)


class CareModel(StrictModel):
    """A care scenario contacts for the relationship, not the sale: its contacts may have a negative expected
    value, but never cost more than `max_cost_yuan` each."""

    max_cost_yuan: float = Field(gt=0)


class MessagesModel(StrictModel):
    sms: str = Field(min_length=1)
    display: str = Field(min_length=1)    # app / web hall, toolbar, kiosk, CRM pop-up
    call: str | None = None               # outbound-call script; default: the display text
    manager: str | None = None            # account manager's talking points; default: the display text


class ScenarioModel(StrictModel):
    name: str
    stage: Stage
    description: str
    target: str = Field(min_length=1)
    product: ProductModel
    incentive: IncentiveModel = IncentiveModel()
    waves: list[WaveModel] = Field(min_length=1)
    strategy: StrategyModel = StrategyModel()
    evaluation: EvaluationModel = EvaluationModel()
    control_rate: float = Field(ge=0, le=0.5)
    budget_yuan: float | None = Field(default=None, gt=0)   # channel cost + incentives over all the waves
    care: CareModel | None = None
    messages: MessagesModel


@dataclass(frozen=True)
class Scenario:
    id: str
    model: ScenarioModel
    target: str                  # the rule as Spark SQL
    reads: tuple[str, ...]       # tags (and stage columns) the rule and the messages read
    texts: dict[str, str]        # message template per channel kind, the call and manager defaults applied
    source: str

    @property
    def waves(self) -> list[WaveModel]:
        return self.model.waves


def load_scenarios(conf_dir: str | Path, library: TagLibrary, catalogue: Catalogue,
                   channels: Channels) -> list[Scenario]:
    """Read every `conf/scenarios/*.yml` (one scenario per file, its id the file name) and check it against the
    tag library, the product catalogue and the channels."""
    folder = Path(conf_dir) / "scenarios"
    files = config_files(folder) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"no scenario templates in {folder} (one YAML file per scenario)")
    scenarios = [_scenario(path, library, catalogue, channels) for path in files]
    ids = [s.id for s in scenarios]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"{folder}: scenario ids (file names) must be unique; repeated: {', '.join(twice)}")
    return scenarios


def _scenario(path: Path, library: TagLibrary, catalogue: Catalogue, channels: Channels) -> Scenario:
    scenario_id = path.stem
    if not re.fullmatch(NAME, scenario_id):
        raise ConfigError(f"{path}: the file name is the scenario id and must match {NAME}")
    model = validate(ScenarioModel, load_yaml(path), path)
    where = str(path)
    if reason := unsafe_sql(model.target):
        raise ConfigError(f"{where}: target: refused: {reason}")
    reads = sql_identifiers(model.target)
    unknown = [n for n in reads if n not in library and n not in STAGE_COLUMNS]
    if unknown:
        raise ConfigError(f"{where}: target: unknown tag(s) {', '.join(unknown)} (see `flowops tags --catalog`)")
    _check_product(where, model, catalogue, channels)
    _check_waves(where, model, channels)
    texts, variables = _templates(where, model, library)
    return Scenario(scenario_id, model, model.target, tuple(dict.fromkeys([*reads, *variables])), texts, where)


def _check_product(where: str, model: ScenarioModel, catalogue: Catalogue, channels: Channels) -> None:
    products = {p.id: p for p in catalogue.products}
    product = model.product
    allowed = FIT_TYPES[product.fit]
    if product.fit == "fixed" and not product.ids:
        raise ConfigError(f"{where}: product.ids: a fixed product needs the ids it offers")
    if product.fit != "fixed" and product.ids:
        raise ConfigError(f"{where}: product.ids: only a fixed product lists ids ({product.fit} chooses its own)")
    if len(product.ids) > channels.policy.max_offers:
        raise ConfigError(f"{where}: product.ids: at most {channels.policy.max_offers} offers per contact "
                          f"(policy.max_offers), got {len(product.ids)}")
    for pid in product.ids:
        if pid not in products:
            raise ConfigError(f"{where}: product.ids: unknown product {pid} (see conf/products.yml)")
        if products[pid].type not in allowed:
            raise ConfigError(f"{where}: product.ids: {pid} is a {products[pid].type}")
    if not any(p.type in allowed for p in catalogue.products):
        raise ConfigError(f"{where}: product.fit {product.fit}: conf/products.yml has no {'/'.join(allowed)}")
    incentive = model.incentive
    if incentive.kind in ("credit", "coupon") and incentive.yuan <= 0:
        raise ConfigError(f"{where}: incentive.yuan: a {incentive.kind} needs its value in yuan")
    if incentive.kind == "trial_data" and not incentive.mb:
        raise ConfigError(f"{where}: incentive.mb: trial data needs its size in MB")
    if incentive.kind == "free_minutes" and not incentive.minutes:
        raise ConfigError(f"{where}: incentive.minutes: free minutes need their number")


def _check_waves(where: str, model: ScenarioModel, channels: Channels) -> None:
    waves = model.waves
    if [w.wave for w in waves] != list(range(1, len(waves) + 1)):
        raise ConfigError(f"{where}: waves: numbered 1, 2, ... in order; got {[w.wave for w in waves]}")
    high = model.strategy.high_value
    if high and (high.channel not in channels or channels[high.channel].mode != "active"):
        raise ConfigError(f"{where}: strategy.high_value.channel: {high.channel!r} is not an active channel "
                          f"(conf/channels.yml: {', '.join(channels.ids)})")
    for i, wave in enumerate(waves):
        key = f"waves[{i}]"
        for field, mode in (("active", "active"), ("passive", "passive"), ("fallback", None)):
            chosen = getattr(wave, field)
            if chosen is None:
                continue
            if chosen not in channels:
                raise ConfigError(f"{where}: {key}.{field}: unknown channel {chosen!r} "
                                  f"(conf/channels.yml: {', '.join(channels.ids)})")
            if mode and channels[chosen].mode != mode:
                raise ConfigError(f"{where}: {key}.{field}: channel {chosen} is {channels[chosen].mode}")
        if i and wave.start_day <= waves[i - 1].last_day:
            raise ConfigError(f"{where}: {key}: waves overlap: wave {wave.wave} starts on day {wave.start_day}, "
                              f"before wave {waves[i - 1].wave} has its feedback (day {waves[i - 1].feedback_day})")


def _templates(where: str, model: ScenarioModel, library: TagLibrary) -> tuple[dict[str, str], list[str]]:
    """The message text per channel kind (the call script and talking points default to the display text),
    each parsed and its variables checked; and the tags they read."""
    texts = {"sms": model.messages.sms, "display": model.messages.display,
             "call": model.messages.call or model.messages.display,
             "manager": model.messages.manager or model.messages.display}
    variables: list[str] = []
    for kind, text in texts.items():
        try:
            names = meta.find_undeclared_variables(ENVIRONMENT.parse(text))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{where}: messages.{kind}: does not parse: {exc.message} (line {exc.lineno})") from None
        unknown = sorted(n for n in names if n not in library and n not in MESSAGE_VARIABLES
                         and n not in STAGE_COLUMNS)
        if unknown:
            raise ConfigError(f"{where}: messages.{kind}: unknown variable(s) {', '.join(unknown)} (tags, or "
                              f"{', '.join(sorted(MESSAGE_VARIABLES))})")
        if model.product.allow_extra_cost and "extra_cost_yuan" not in names:
            raise ConfigError(f"{where}: messages.{kind}: product.allow_extra_cost offers products that may cost "
                              "more than they save: the message must say so with {{ extra_cost_yuan }}")
        variables += [n for n in names if n in library or n in STAGE_COLUMNS]
    return texts, list(dict.fromkeys(variables))


