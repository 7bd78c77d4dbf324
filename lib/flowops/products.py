"""The operator's product catalogue (`conf/products.yml`): plans, packs, apps and terminals on offer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from flowops.config import StrictModel, load_yaml, validate
from flowops.errors import ConfigError

ProductType = Literal["base_plan", "data_plan", "booster", "idle_pack", "app", "terminal"]
PRODUCT_TYPES: tuple[str, ...] = ("base_plan", "data_plan", "booster", "idle_pack", "app", "terminal")


class Product(StrictModel):
    id: str = Field(pattern=r"^[A-Z0-9_]+$")
    type: ProductType
    name: str
    fee_yuan: float = Field(ge=0)
    allowance_mb: float = Field(default=0, ge=0)
    idle_only: bool = False
    generation: Literal["2G", "3G", "4G", "5G"] | None = None
    # What one order is worth to the operator; default: the fee x the catalogue's margin_share. A terminal has no
    # monthly fee: its margin (and its price, for value-cost matching) are given here.
    margin_yuan: float | None = Field(default=None, ge=0)
    price_yuan: float | None = Field(default=None, ge=0)   # default: the fee

    @model_validator(mode="after")
    def _terminal_value(self) -> Product:
        if self.type == "terminal" and (self.margin_yuan is None or self.price_yuan is None):
            raise ValueError(f"product {self.id}: a terminal needs margin_yuan and price_yuan (its fee is 0)")
        return self

    @property
    def value_yuan(self) -> float:
        """What the product costs the subscriber: the price of a terminal, the monthly fee of anything else."""
        return self.price_yuan if self.price_yuan is not None else self.fee_yuan


class Tariff(StrictModel):
    payperuse_yuan_per_mb: float = Field(gt=0)            # data outside every allowance
    payperuse_cap_yuan: float | None = Field(default=None, gt=0)   # monthly cap on those charges


class Catalogue(StrictModel):
    tariff: Tariff
    margin_share: float = Field(0.6, gt=0, le=1)   # share of a product's fee that is margin
    # Months an order of each product type is kept on average: its fee is earned that many times.
    months_kept: dict[ProductType, float] = Field(default_factory=lambda: {t: 1.0 for t in PRODUCT_TYPES})
    products: list[Product]

    def margin(self, product: Product) -> float:
        """What one order of `product` is worth to the operator: its own margin_yuan, else fee x margin share x
        the months such an order is kept."""
        if product.margin_yuan is not None:
            return product.margin_yuan
        return product.fee_yuan * self.margin_share * self.months_kept.get(product.type, 1.0)

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        seen: set[str] = set()
        for product in self.products:
            if product.id in seen:
                raise ValueError(f"product {product.id} is listed twice")
            seen.add(product.id)
        return self


SCHEMA = T.StructType([
    T.StructField("product_id", T.StringType()), T.StructField("type", T.StringType()),
    T.StructField("name", T.StringType()), T.StructField("fee_yuan", T.DoubleType()),
    T.StructField("allowance_mb", T.DoubleType()), T.StructField("idle_only", T.BooleanType()),
    T.StructField("generation", T.StringType()),
])


def load_catalogue(conf_dir: str | Path) -> Catalogue:
    """Read and validate `conf/products.yml`."""
    path = Path(conf_dir) / "products.yml"
    if not path.is_file():
        raise ConfigError(f"product catalogue {path} not found")
    return validate(Catalogue, load_yaml(path), path)


def products_df(spark: SparkSession, catalogue: Catalogue) -> DataFrame:
    """The catalogue as a small DataFrame (one row per product), for broadcast joins."""
    rows = [(p.id, p.type, p.name, p.fee_yuan, p.allowance_mb, p.idle_only, p.generation)
            for p in catalogue.products]
    return spark.createDataFrame(rows, SCHEMA)
