"""python-scorer: a Rapport scoring-rule plugin written in Python.

Built into a WebAssembly component with componentize-py (see README.md and
build.sh); it implements the `scoring` interface of rapport:crm@0.1.0.

An engagement score from the customer's purchase history:

- n = interactions of kind "purchase"; spend = their summed amount
  (`amount.minor`; purchases without an amount add 0; currencies are not
  converted); days = whole days between the last purchase and the host's
  `now`.
- The history is compact (WIT `customer-history`): an entry's kind is an
  index into `history.strings`, which holds each distinct kind, channel,
  currency code and SKU once. So "purchase" is looked up there once and
  entries are matched by number (`history.strings[entry.kind]` is the
  kind's text).
- recent = days <= `recent_days` (tenant config, default 90).
- value = 10 * n + spend // 1000 + (20 if recent else 0).
- label = "hot" (recent and n >= 2), "warm" (recent), "cold" (older
  purchases only) or "new" (none); segment = "buyer" / "prospect".
- explanation = "{n} purchase(s), spend {spend} minor units, last {days}
  day(s) ago" (or "no purchases").
- components = [("purchases", n), ("spend_minor", spend),
  ("days_since_last", days, or -1 without purchases)].
- score logs one info line "scored {customer id}" with field
  ("label", label).
- The population fit streams (the host calls fit-chunk once per chunk of
  at most 10,000 summaries, possibly never, then fit-finish on the same
  instance): fit-chunk adds each chunk's counts to three running totals
  (customers, buyers = customers with a purchase, purchases), never keeping
  the summaries; fit-finish returns {"customers": N, "buyers": B,
  "mean_purchases": M} (M = purchases / N rounded to 3 decimals, 0.0 for
  no customers), and resets the totals so that the next fit-chunk starts
  a new fit. Neither logs.

A config that is not a JSON object, or whose "recent_days" is not a
positive integer, is `plugin-error::invalid-config`. Errors are raised as
`componentize_py_types.Err(...)`, which the bindings return as the
function's `result` error; any other exception would trap.
"""

import json

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports.scoring import CustomerScore
from wit_world.imports import config, log
from wit_world.imports.types import PluginError_InvalidConfig

MS_PER_DAY = 86_400_000
DEFAULT_RECENT_DAYS = 90


class FitTotals:
    """The running totals of the fit in progress on this instance. Module
    state, because componentize-py may build a new `Scoring` object per
    call, while the module lives as long as the instance (one fit)."""

    def __init__(self):
        self.customers = 0
        self.buyers = 0
        self.purchases = 0


fit_totals = FitTotals()


def recent_days(config_json):
    """The tenant's `recent_days`, validated."""
    try:
        settings = json.loads(config_json)
    except ValueError as err:
        raise Err(PluginError_InvalidConfig(f"config is not JSON: {err}"))
    if not isinstance(settings, dict):
        raise Err(PluginError_InvalidConfig("config is not a JSON object"))
    days = settings.get("recent_days", DEFAULT_RECENT_DAYS)
    # bool is an int in Python: refuse it explicitly.
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        raise Err(PluginError_InvalidConfig('"recent_days" must be a positive integer'))
    return days


def string_index(history, text):
    """The index of `text` in the history's strings, or None if no entry
    refers to it (each distinct string is there once)."""
    try:
        return history.strings.index(text)
    except ValueError:
        return None


def score_one(history, window):
    purchase = string_index(history, "purchase")
    purchases = [e for e in history.interactions if e.kind == purchase]
    n = len(purchases)
    spend = sum(p.amount.minor for p in purchases if p.amount is not None)
    if n == 0:
        days = None
    else:
        last = max(p.occurred_at for p in purchases)
        days = max(0, (history.now - last) // MS_PER_DAY)
    recent = days is not None and days <= window
    if n == 0:
        label = "new"
    elif recent and n >= 2:
        label = "hot"
    elif recent:
        label = "warm"
    else:
        label = "cold"
    value = 10 * n + spend // 1000 + (20 if recent else 0)
    if days is None:
        explanation = "no purchases"
    else:
        explanation = f"{n} purchase(s), spend {spend} minor units, last {days} day(s) ago"
    return CustomerScore(
        value=float(value),
        label=label,
        segment="buyer" if n else "prospect",
        explanation=explanation,
        components=[
            ("purchases", float(n)),
            ("spend_minor", float(spend)),
            ("days_since_last", float(-1 if days is None else days)),
        ],
    )


class Scoring(exports.Scoring):
    def score(self, input):
        result = score_one(input, recent_days(config.get_config()))
        log.log(log.Level.INFO, f"scored {input.customer.id}", [("label", result.label)])
        return result

    def score_batch(self, inputs):
        # One config read per batch; a bad config fails every item alike,
        # keeping one result per input.
        try:
            window = recent_days(config.get_config())
        except Err as err:
            return [err for _ in inputs]
        return [Ok(score_one(h, window)) for h in inputs]

    def fit_chunk(self, chunk, now):
        # Three numbers for the whole population, whatever its size: each
        # chunk is counted and dropped.
        fit_totals.customers += len(chunk)
        fit_totals.buyers += sum(1 for c in chunk if c.purchases)
        fit_totals.purchases += sum(len(c.purchases) for c in chunk)

    def fit_finish(self, now):
        global fit_totals
        totals, fit_totals = fit_totals, FitTotals()
        customers = totals.customers
        mean = round(totals.purchases / customers, 3) if customers else 0.0
        return json.dumps({"customers": customers, "buyers": totals.buyers, "mean_purchases": mean})
