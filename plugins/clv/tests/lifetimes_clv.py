#!/usr/bin/env python3
"""Reference CLV from `lifetimes`, for the Rust parity test (tests/cdnow.rs).

usage: lifetimes_clv.py CDNOW_SAMPLE_TXT CALIBRATION_END(YYYY-MM-DD) FREQ
                        TIME_MONTHS DISCOUNT_RATE OUT_JSON

Reads the CDNOW sample (master id, sample id, YYYYMMDD, CDs, dollars),
summarises it with `summary_data_from_transaction_data` (days, with the
dollar column as monetary value, up to the calibration end), in weeks
(FREQ=W: freq="D", freq_multiplier=7) or days (FREQ=D), fits
`BetaGeoFitter` on every customer and `GammaGammaFitter` on the customers
with a repeat purchase, and writes a JSON object: both parameter sets and,
per sample id, frequency, recency, T, monetary_value,
conditional_expected_average_profit and customer_lifetime_value(bgf,
..., time=TIME_MONTHS, discount_rate=DISCOUNT_RATE, freq=FREQ).

Exit status 3 means lifetimes (or pandas) is not installed: the Rust test
then skips with a message.
"""

import json
import sys

try:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data
except ImportError as error:  # pragma: no cover - environment dependent
    print(f"lifetimes/pandas not available: {error}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    path, end, freq, months, discount, out_path = sys.argv[1:7]
    months, discount = int(months), float(discount)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append((int(fields[1]), fields[2], float(fields[4])))
    transactions = pd.DataFrame(rows, columns=["id", "date", "spend"])
    transactions["date"] = pd.to_datetime(transactions["date"], format="%Y%m%d")
    summary = summary_data_from_transaction_data(
        transactions,
        "id",
        "date",
        monetary_value_col="spend",
        observation_period_end=end,
        freq="D",
        freq_multiplier=7 if freq == "W" else 1,
    )
    bgf = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    returning = summary[summary["frequency"] > 0]
    ggf = GammaGammaFitter().fit(returning["frequency"], returning["monetary_value"])
    spend = ggf.conditional_expected_average_profit(summary["frequency"], summary["monetary_value"])
    clv = ggf.customer_lifetime_value(
        bgf,
        summary["frequency"],
        summary["recency"],
        summary["T"],
        summary["monetary_value"],
        time=months,
        discount_rate=discount,
        freq=freq,
    )
    customers = {
        str(int(cid)): {
            "frequency": float(row["frequency"]),
            "recency": float(row["recency"]),
            "T": float(row["T"]),
            "monetary_value": float(row["monetary_value"]),
            "expected_spend": float(spend[cid]),
            "clv": float(clv[cid]),
        }
        for cid, row in summary.iterrows()
    }
    result = {
        "bgnbd": {k: float(bgf.params_[k]) for k in ["r", "alpha", "a", "b"]},
        "gamma_gamma": {k: float(ggf.params_[k]) for k in ["p", "q", "v"]},
        "repeat_customers": int(len(returning)),
        "customers": customers,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    print(
        f"lifetimes: {len(customers)} customers, {len(returning)} repeat; "
        f"BG/NBD {result['bgnbd']}; Gamma-Gamma {result['gamma_gamma']}"
    )


if __name__ == "__main__":
    main()
