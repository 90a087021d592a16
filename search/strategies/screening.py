"""Short runs as a screen before a stack's first full run, for as long as they pay.

With a lower rung (`--fractions 1/4,1`), the additive strategy first runs a new stack at the
short budget, paired on one seed with the incumbent's short run; only a stack not worse than
the incumbent there by more than the margin gets its full run. Whether short runs pay is
measured, not assumed: the rank correlation between the two budgets (Spearman, Kendall) over
the stacks that ran at both is kept up to date and shown, and once MIN_PAIRS stacks give a
Spearman under MIN_SPEARMAN, screening stops for the rest of the search (at 1/9 of the CPU
budget the catalog ranks by how fast moves start, not by where they end: fidelity.md).
"""
from __future__ import annotations

from population.ladder import Rung
from population.stats import rank_correlation
from population.store import DecisionKind
from search.context import Search
from search.evaluator import Request

MIN_PAIRS = 6
MIN_SPEARMAN = 0.6


class Screen:
    def __init__(self, search: Search, rung: Rung) -> None:
        self.search, self.rung = search, rung
        self.active = not search.recall("screen_off", False)

    def request(self, variant: str, reference: str) -> Request | None:
        """The next short run `variant`'s verdict needs (the reference's on the screen seed too); None when both
        finished or are running."""
        running = {r.key for r in self.search.in_flight()}
        for who in (reference, variant):
            request = Request(who, self.rung.budget, self.rung.seeds[0], purpose="screen")
            if self.search.result(request) is None and request.key not in running:
                return request
        return None

    def pending(self, variant: str) -> bool:
        """Its short run is running or waits for a verdict."""
        return any(r.variant == variant and r.budget == self.rung.budget for r in self.search.in_flight()) or \
            (self.screened(variant) and not any(d.kind in (DecisionKind.PROMOTED, DecisionKind.REJECTED)
                                                for d in self.search.decisions(variant)))

    def verdict(self, variant: str, reference: str, margin: float) -> bool | None:
        """True: it earned its full run; False: it was worse than the reference by more than the margin (recorded);
        None: a short run is missing."""
        seed = self.rung.seeds[0]
        mine = self.search.scores(variant, self.rung.budget, [seed])
        theirs = self.search.scores(reference, self.rung.budget, [seed])
        if seed not in mine or seed not in theirs:
            return None
        delta = mine[seed] - theirs[seed]
        if delta <= margin:
            self.search.decide(variant, DecisionKind.PROMOTED, rung=1, reference=reference, delta=delta,
                               reason=f"its short run was within {margin:.4f} of the incumbent's")
            return True
        self.search.decide(variant, DecisionKind.REJECTED, rung=0, reference=reference, delta=delta,
                           reason=f"its short run was worse than the incumbent's by more than {margin:.4f}")
        return False

    def screened(self, variant: str) -> bool:
        return bool(self.search.scores(variant, self.rung.budget, [self.rung.seeds[0]]))

    def measure(self, full: Rung) -> list[dict]:
        """The rank correlation between the short and the full budget over the stacks that ran at both; screening
        stops when it is too weak."""
        pairs = []
        for variant in self.search.variants():
            short = self.search.scores(variant.id, self.rung.budget)
            long = self.search.scores(variant.id, full.budget)
            if short and long:
                pairs.append((sum(short.values()) / len(short), sum(long.values()) / len(long)))
        correlation = rank_correlation([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) >= 3 else None
        row = {"low": self.rung.label, "high": full.label, "n": len(pairs),
               "spearman": correlation[0] if correlation else None, "kendall": correlation[1] if correlation else None}
        if self.active and correlation and len(pairs) >= MIN_PAIRS and correlation[0] < MIN_SPEARMAN:
            self.active = False
            self.search.remember("screen_off", True)
            self.search.event(f"short runs stop: their ranking does not predict the full budget's (Spearman "
                              f"{correlation[0]:.2f} over {len(pairs)} stacks)")
        return [row]
