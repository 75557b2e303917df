-- Catalogue rewards gain an optional audience (JSON: a scoring plugin and
-- its segments, e.g. relationship levels): only customers in it may redeem
-- the reward or are told it became redeemable. Append-only.
ALTER TABLE loyalty_rewards ADD COLUMN audience TEXT;
