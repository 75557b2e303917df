#!/usr/bin/env python3
"""Generates the deterministic basket set used by the mlxtend parity test.

Writes data/baskets.txt: one basket per line, SKUs separated by spaces.
Seeded, so re-running it reproduces the committed file byte for byte.
Baskets draw SKUs by a skewed popularity (a few best-sellers, a long tail)
and carry planted associations (accessories bought with their product, a
three-item bundle), so the rule set has strong, weak and chance rules.
"""

import os
import random

SEED = 20261123
BASKETS = 4000
SKUS = [f"SKU-{i:03d}" for i in range(1, 81)]
# Planted: when the key is in the basket, each follower joins with its
# probability.
PLANTED = {
    "SKU-003": [("SKU-017", 0.60), ("SKU-018", 0.25)],
    "SKU-010": [("SKU-011", 0.70), ("SKU-012", 0.55)],
    "SKU-011": [("SKU-012", 0.40)],
    "SKU-025": [("SKU-026", 0.35)],
    "SKU-040": [("SKU-041", 0.90)],
    "SKU-001": [("SKU-050", 0.15)],
}


def main() -> None:
    rng = random.Random(SEED)
    # Zipf-like popularity: weight 1 / rank^0.8.
    weights = [1.0 / (rank ** 0.8) for rank in range(1, len(SKUS) + 1)]
    lines = []
    for _ in range(BASKETS):
        size = rng.choice([1, 1, 2, 2, 2, 3, 3, 4, 5, 6])
        basket = set(rng.choices(SKUS, weights=weights, k=size))
        for key, followers in PLANTED.items():
            if key in basket:
                for follower, probability in followers:
                    if rng.random() < probability:
                        basket.add(follower)
        lines.append(" ".join(sorted(basket)))
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "data"), exist_ok=True)
    with open(os.path.join(here, "data", "baskets.txt"), "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
