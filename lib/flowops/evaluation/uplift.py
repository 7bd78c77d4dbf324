"""Uplift of a campaign against its control group, with a 95% interval for the difference of two proportions
(Newcombe's hybrid score interval, from statsmodels: sound at small counts and at 0% or 100%)."""

from __future__ import annotations

from dataclasses import dataclass

from statsmodels.stats.proportion import confint_proportions_2indep


@dataclass(frozen=True)
class Uplift:
    treated: int
    treated_converted: int
    control: int
    control_converted: int

    @property
    def treated_rate(self) -> float:
        return self.treated_converted / self.treated if self.treated else 0.0

    @property
    def control_rate(self) -> float:
        return self.control_converted / self.control if self.control else 0.0

    @property
    def uplift(self) -> float:
        """Treated conversion minus control conversion."""
        return self.treated_rate - self.control_rate

    def interval(self, alpha: float = 0.05) -> tuple[float, float] | None:
        """The (1 - alpha) interval of the uplift; None without both a treated and a control group."""
        if not self.treated or not self.control:
            return None
        low, high = confint_proportions_2indep(self.treated_converted, self.treated, self.control_converted,
                                               self.control, method="newcomb", compare="diff", alpha=alpha)
        return float(low), float(high)

    @property
    def incremental(self) -> float:
        """Orders the campaign added: the uplift times the treated group."""
        return self.uplift * self.treated
