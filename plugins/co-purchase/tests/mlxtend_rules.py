#!/usr/bin/env python3
"""Reference rules from mlxtend, for the Rust parity test.

usage: mlxtend_rules.py BASKETS_TXT MIN_SUPPORT MIN_CONFIDENCE MIN_LIFT OUT_JSON

Reads one basket per line (SKUs separated by whitespace; blank lines are
skipped, as the Rust fit skips empty baskets), runs
apriori(min_support, max_len=2) + association_rules(metric="confidence",
min_threshold=MIN_CONFIDENCE), keeps the 1 -> 1 rules with lift >= MIN_LIFT
and writes a JSON list of {antecedent, consequent, support, confidence,
lift, leverage, conviction} (conviction null when infinite).

Exit status 3 means mlxtend or pandas is not installed (the Rust test
then skips with a message).
"""

import json
import math
import sys

try:
    import pandas as pd
    from mlxtend.frequent_patterns import apriori, association_rules
    from mlxtend.preprocessing import TransactionEncoder
except ImportError as error:  # pragma: no cover - environment dependent
    print(f"mlxtend/pandas not available: {error}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    path, min_support, min_confidence, min_lift, out_path = sys.argv[1:6]
    min_support, min_confidence, min_lift = (
        float(min_support),
        float(min_confidence),
        float(min_lift),
    )
    with open(path, encoding="utf-8") as f:
        baskets = [line.split() for line in f if line.split()]

    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    frequent = apriori(onehot, min_support=min_support, use_colnames=True, max_len=2)
    rules = association_rules(
        frequent,
        num_itemsets=len(onehot),
        metric="confidence",
        min_threshold=min_confidence,
    )
    rules = rules[
        (rules["antecedents"].apply(len) == 1)
        & (rules["consequents"].apply(len) == 1)
        & (rules["lift"] >= min_lift)
    ]
    out = []
    for row in rules.itertuples(index=False):
        conviction = float(row.conviction)
        out.append(
            {
                "antecedent": next(iter(row.antecedents)),
                "consequent": next(iter(row.consequents)),
                "support": float(row.support),
                "confidence": float(row.confidence),
                "lift": float(row.lift),
                "leverage": float(row.leverage),
                "conviction": None if math.isinf(conviction) else conviction,
            }
        )
    out.sort(key=lambda r: (r["antecedent"], r["consequent"]))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)
    print(f"mlxtend: {len(baskets)} baskets, {len(out)} rules")


if __name__ == "__main__":
    main()
