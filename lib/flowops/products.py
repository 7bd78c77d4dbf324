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


class Product(StrictModel):
    id: str = Field(pattern=r"^[A-Z0-9_]+$")
    type: ProductType
    name: str
    fee_yuan: float = Field(ge=0)
    allowance_mb: float = Field(default=0, ge=0)
    idle_only: bool = False
    generation: Literal["2G", "3G", "4G", "5G"] | None = None


class Tariff(StrictModel):
    payperuse_yuan_per_mb: float = Field(gt=0)            # data outside every allowance
    payperuse_cap_yuan: float | None = Field(default=None, gt=0)   # monthly cap on those charges


class Catalogue(StrictModel):
    tariff: Tariff
    margin_share: float = Field(0.6, gt=0, le=1)   # share of a product's fee that is margin (offer value)
    products: list[Product]

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
