"""Uplift of a campaign against its control group, with a 95% interval for the difference of two proportions
(Newcombe's hybrid score interval, from statsmodels: sound at small counts and at 0% or 100%).

The control group is drawn among the eligible before the contacts are allocated, so the two arms are alike; but
the allocation then contacts only part of the treated arm (the rest lose a contact slot, a scarce channel's day
or the budget to a contact worth more, and that choice is by value, not at random). The arms are therefore
compared whole (intention to treat), and the difference is divided by the share of the treated arm that was
contacted: the effect per contact on those contacted (the Wald estimator; being left out by the allocation
changes nothing about this scenario's offer). With everyone contacted, it is treated minus control conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

from statsmodels.stats.proportion import confint_proportions_2indep


@dataclass(frozen=True)
class Uplift:
    treated: int              # the treated arm (assigned)
    treated_converted: int
    control: int
    control_converted: int
    contacted: int | None = None   # of the treated arm; None: all of it

    @property
    def treated_rate(self) -> float:
        return self.treated_converted / self.treated if self.treated else 0.0

    @property
    def control_rate(self) -> float:
        return self.control_converted / self.control if self.control else 0.0

    @property
    def share(self) -> float:
        """Share of the treated arm contacted."""
        if self.contacted is None or not self.treated:
            return 1.0
        return self.contacted / self.treated

    @property
    def uplift(self) -> float:
        """Incremental conversion per contact: (treated arm minus control conversion) / share contacted."""
        return (self.treated_rate - self.control_rate) / self.share if self.share else 0.0

    def interval(self, alpha: float = 0.05) -> tuple[float, float] | None:
        """The (1 - alpha) interval of the uplift; None without a treated arm, a contact and a control group."""
        if not self.treated or not self.control or not self.share:
            return None
        low, high = confint_proportions_2indep(self.treated_converted, self.treated, self.control_converted,
                                               self.control, method="newcomb", compare="diff", alpha=alpha)
        return float(low) / self.share, float(high) / self.share

    @property
    def incremental(self) -> float:
        """Orders the campaign added: the uplift per contact times the contacted."""
        contacted = self.treated if self.contacted is None else self.contacted
        return self.uplift * contacted
