"""Cold-start resampling of a cross-domain CTR log: DADIN's Algorithm 2 (the DADIN paper, Sec. 4.2).

DADIN builds its cold-start scenario by splitting the *users* of the target domain
(ads / music) so that the target-domain users of training and of evaluation overlap as
little as possible, while the source domain (news feeds / movies) keeps every user.
Algorithm 2, as the paper states it, with ``A_train`` and ``A_cross``:

1. ``user_list`` = the users with at least one target-domain row.
2. A fraction ``A_train`` of ``user_list`` is ``user_train_list``; their rows in both
   domains form ``train_data``.
3. A fraction ``A_cross`` of ``user_train_list`` are the users that *overlap* the
   evaluation sets: their last-day target-domain rows are taken out of ``train_data``
   and go to the validation set (50%) or the test set (50%).
4. The remaining ``1 - A_train`` of ``user_list`` are divided between the test and the
   validation set, which receive these users' last-day target-domain rows.
5. Return ``train_data, valid_data, test_data``.

Choices where the paper is silent (each is an argument):

* The 50/50 division is by **user** (a user's last-day rows all go to one split), done
  separately for the step-3 and the step-4 users, so both splits hold both kinds.
* ``keep_all_source=True`` (default) keeps every source-domain row of every user in
  train, following the paper's "the source domain contains all the user sets of the
  target domain"; ``False`` keeps only the source rows of ``user_train_list`` (the
  literal reading of step 2).
* Target rows of step-4 users before their last day are dropped (they would leak the
  users into training); so are the rows of users outside ``user_list`` when
  ``keep_all_source=False``.
* "Last day": ``last_day="global"`` (default) is the last day of the target domain in
  the whole log (DIGIX: the 8th day); ``"user"`` is each user's own last target day
  (for logs such as Amazon's that span years).
* DADIN also subsamples Huawei's users by 50% *before* Algorithm 2; that is the
  builder's business, not this function's.

The DADIN authors' code does not contain this step (``official_code_notes.md`` §3.3);
this follows the paper text alone.

Example:

>>> import numpy as np
>>> cols = {"user_id": np.array([1, 1, 2, 2, 3]), "domain": np.array([0, 1, 0, 1, 1]),
...         "day": np.array([1, 2, 1, 2, 2]), "click": np.zeros(5, np.float32)}
>>> out = resample_cold_start(cols, a_train=0.5, a_cross=0.0, seed=0)
>>> sorted(out)
['test', 'train', 'valid']
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tfdebias.errors import DataError, UsageError

Columns = dict[str, np.ndarray]


def resample_cold_start(
    columns: Mapping[str, np.ndarray],
    *,
    a_train: float,
    a_cross: float,
    seed: int,
    user_col: str = "user_id",
    domain_col: str = "domain",
    day_col: str = "day",
    target_domain: int = 1,
    last_day: str = "global",
    keep_all_source: bool = True,
    cold_start_col: str | None = "cold_start",
) -> dict[str, Columns]:
    """Split a two-domain log into ``train``/``valid``/``test`` by Algorithm 2 of DADIN.

    Args:
      columns: equal-length 1-D or N-D numpy columns, one row per impression; must
        hold ``user_col``, ``domain_col`` and ``day_col`` (any orderable day index).
      a_train: ``A_train``, the fraction of target-domain users kept for training.
      a_cross: ``A_cross``, the fraction of the training users whose last-day target
        rows move to valid/test.
      seed: seeds every random choice; the same inputs and seed give the same split.
      target_domain: the value of ``domain_col`` that marks the target domain.
      last_day: ``"global"`` or ``"user"`` (see the module docstring).
      keep_all_source: keep every source-domain row in train (see the module docstring).
      cold_start_col: if set, add this float32 column to every split: 1.0 when the
        row's user has no target-domain row in the returned train split.

    Returns:
      ``{"train": cols, "valid": cols, "test": cols}``; row order within each split
      follows the input. valid and test hold target-domain last-day rows only, and no
      user is in both.
    """
    if not (0.0 <= a_train <= 1.0 and 0.0 <= a_cross <= 1.0):
        raise UsageError(f"a_train and a_cross must be in [0, 1], got {a_train!r}, {a_cross!r}")
    if last_day not in ("global", "user"):
        raise UsageError(f"last_day must be 'global' or 'user', got {last_day!r}")
    missing = [c for c in (user_col, domain_col, day_col) if c not in columns]
    if missing:
        raise DataError(
            f"cold-start resampling needs columns {missing}; the data has {sorted(columns)}"
        )
    cols = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) != 1:
        raise DataError(f"columns have different lengths {sorted(lengths)}")
    users, day = cols[user_col], cols[day_col]
    is_target = cols[domain_col] == target_domain

    # 1. user_list, and every row's user as an index into it (-1: not a target user)
    user_list = np.unique(users[is_target])
    n = len(user_list)
    pos = np.minimum(np.searchsorted(user_list, users), max(n - 1, 0))
    in_list = user_list[pos] == users if n else np.zeros(len(users), bool)
    uidx = np.where(in_list, pos, -1)

    # 2.-4. roles: 0 train only, 1 cross (train + eval), 2 eval only; eval half 0/1
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = int(round(a_train * n))
    n_cross = int(round(a_cross * n_train))
    train_users, rest_users = perm[:n_train], perm[n_train:]
    cross_users = train_users[rng.permutation(n_train)[:n_cross]]
    role = np.zeros(n, np.int8)
    role[cross_users] = 1
    role[rest_users] = 2
    to_test = np.zeros(n, bool)
    for group in (cross_users, rest_users):  # two groups, each split 50/50 vectorised
        shuffled = group[rng.permutation(len(group))]
        to_test[shuffled[len(group) // 2:]] = True

    # last-day target rows
    if last_day == "global":
        last = day[is_target].max() if is_target.any() else None
        is_last = is_target & (day == last)
    else:
        ti = uidx[is_target]
        order = np.lexsort((day[is_target], ti))  # by user, then day
        last_of_user = np.empty(n, dtype=day.dtype)
        ends = np.r_[np.nonzero(np.diff(ti[order]))[0], len(order) - 1] if len(order) else []
        last_of_user[ti[order][ends]] = day[is_target][order][ends]
        is_last = is_target & in_list & (day == last_of_user[np.maximum(uidx, 0)])

    row_role = np.where(in_list, role[np.maximum(uidx, 0)], -1)
    row_test = in_list & to_test[np.maximum(uidx, 0)]
    eval_row = is_last & (row_role >= 1)
    train_target = is_target & (row_role >= 0) & (row_role <= 1) & ~eval_row
    train_source = ~is_target & (keep_all_source | (row_role == 0) | (row_role == 1))
    masks = {
        "train": train_target | train_source,
        "valid": eval_row & ~row_test,
        "test": eval_row & row_test,
    }
    out = {split: {k: v[m] for k, v in cols.items()} for split, m in masks.items()}
    if cold_start_col:
        warm = np.unique(users[masks["train"] & is_target])
        for split, m in masks.items():
            out[split][cold_start_col] = (~np.isin(users[m], warm)).astype(np.float32)
    return out
