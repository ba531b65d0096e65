"""The sandbox's masking library: what the release gate applies to "record" outputs.

Every function takes and returns Arrow arrays (ChunkedArray too; lists and numpy arrays are
converted) and keeps nulls null. The work runs in Arrow compute kernels and numpy on the Arrow
buffers, never a Python loop per row. (The per-value `authops.policies.masking` serves catalogue
samples.)

- characters: `keep_ends`, `full_mask` and presets `mask_name`, `mask_mobile`, `mask_resident_id`,
  `mask_uscc`, `mask_plate`, `mask_bank_card`, `mask_address`
- keyed tokens: `token_key` (per customer and product), `tokenize` (AES-CMAC; no unkeyed hash)
- generalization: `age_band`, `date_to`, `address_to_district`, `amount_band`, `suppress`,
  `date_shift` (keyed per subject)
- by field kind and grade: `mask_by_field`, `mask_table`
- `k_anonymity`: local suppression of quasi-identifier combinations seen fewer than k times
"""

from authops.sandbox.masking.addresses import address_to_district, mask_address
from authops.sandbox.masking.fields import mask_by_field, mask_table, plan
from authops.sandbox.masking.generalize import age_band, amount_band, date_shift, date_to, suppress
from authops.sandbox.masking.kanon import group_sizes, k_anonymity
from authops.sandbox.masking.strings import (full_mask, keep_ends, mask_bank_card, mask_mobile, mask_name,
                                             mask_plate, mask_resident_id, mask_uscc)
from authops.sandbox.masking.tokens import token_key, tokenize

__all__ = [
    "address_to_district", "age_band", "amount_band", "date_shift", "date_to", "full_mask", "group_sizes",
    "k_anonymity", "keep_ends", "mask_address", "mask_bank_card", "mask_by_field", "mask_mobile", "mask_name",
    "mask_plate", "mask_resident_id", "mask_table", "mask_uscc", "plan", "suppress", "token_key", "tokenize",
]
