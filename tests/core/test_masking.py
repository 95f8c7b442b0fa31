"""The one masking function (pipeline/core/masking.py) on hand-checkable rows."""
import numpy as np
import pytest

from pipeline.core import masking
from pipeline.core.masking import MaskingConfig, mask_dynamic, mask_rows, parse_ngram

CLS, SEP, MASK, VOCAB = 101, 102, 103, 1000


def layout(words_a, words_b=None, width=None):
    """[CLS] A [SEP] B [SEP] from words given as token counts; ids are 200 + position."""
    ids, starts, segment = [CLS], [0], [0]
    for seg, words in ((0, words_a), (1, words_b)):
        if words is None:
            continue
        for size in words:
            for k in range(size):
                ids.append(200 + len(ids))
                starts.append(1 if k == 0 else 0)
                segment.append(seg)
        ids.append(SEP)
        starts.append(0)
        segment.append(seg)
    n = len(ids)
    width = width or n
    pad = width - n
    return (np.array(ids + [0] * pad), np.array([1] * n + [0] * pad),
            np.array(segment + [0] * pad), np.array(starts + [0] * pad))


def batch(*rows):
    return [np.stack(column) for column in zip(*rows)]


def config(**kw):
    base = dict(max_predictions_per_seq=20, masked_lm_prob=0.15, vocab_size=VOCAB,
                mask_id=MASK)
    base.update(kw)
    return MaskingConfig(**base)


def masked_positions(out, row):
    weights = out["masked_lm_weights"][row]
    return out["masked_lm_positions"][row][weights > 0].tolist()


def test_padded_rows_finds_cls_and_both_seps():
    ids, mask, seg, starts = layout([2, 1], [3], width=12)
    rows = masking.padded_rows(ids[None], mask[None], seg[None], starts[None])
    assert rows.candidate[0].tolist() == [False, True, True, True, False, True, True, True,
                                          False, False, False, False]
    assert rows.length.tolist() == [9]


def test_single_segment_rows_have_one_sep():
    ids, mask, seg, starts = layout([2, 2], None, width=8)
    rows = masking.padded_rows(ids[None], mask[None], seg[None], starts[None])
    assert rows.candidate[0].tolist() == [False, True, True, True, True, False, False, False]


@pytest.mark.parametrize("length,expected", [(10, 2), (30, 4), (50, 8), (200, 20), (3, 1)])
def test_budget_rounds_half_to_even_and_caps(length, expected):
    # 10 * 0.15 = 1.5 -> 2; 30 * 0.15 = 4.5 -> 4 (Python's round); at least 1; at most 20.
    assert masking.budget(np.array([length]), config()).tolist() == [expected]


def test_unigram_whole_words_fill_the_budget_and_stay_whole():
    # 20 words of 2 tokens, budget round(43 * 0.15) = 6 -> three whole words.
    rows = batch(*[layout([2] * 10, [2] * 10) for _ in range(50)])
    out = mask_dynamic(*rows, np.arange(50), epoch=0, seed=1, config=config())
    starts = rows[3]
    for r in range(50):
        pos = masked_positions(out, r)
        assert len(pos) == 6
        for p in pos:  # every masked token's word is masked whole
            first = p if starts[r][p] else p - 1
            assert first in pos and first + 1 in pos


def test_groups_never_cross_sep_even_without_a_word_start():
    # B begins with a continuation piece (truncation cut its word): it starts its own group.
    ids, mask, seg, starts = layout([2], [2])
    starts[4] = 0  # B's first token flagged as a continuation
    rows = masking.padded_rows(ids[None], mask[None], seg[None], starts[None])
    groups = masking.find_groups(rows, whole_word=True)
    assert groups.of_token[0].tolist()[1:7] == [0, 0, 0, 1, 1, 1]
    assert groups.size[0].tolist() == [2, 2]


def test_eighty_ten_ten():
    rows = batch(*[layout([1] * 120, None) for _ in range(400)])
    out = mask_dynamic(*rows, np.arange(400), epoch=3, seed=7,
                       config=config(max_predictions_per_seq=18))
    original, masked = rows[0], out["input_ids"]
    r, c = np.nonzero(masked != original)
    changed_to_mask = (masked == MASK).sum()
    weights = out["masked_lm_weights"]
    total = int(weights.sum())
    assert total == 400 * 18
    positions = out["masked_lm_positions"]
    kept = sum(int(masked[i, p] == original[i, p]) for i in range(400)
               for p, w in zip(positions[i], weights[i]) if w)
    random_ = total - changed_to_mask - kept
    assert abs(changed_to_mask / total - 0.8) < 0.02
    assert abs(kept / total - 0.1) < 0.015
    assert abs(random_ / total - 0.1) < 0.015
    # Labels are the original ids; unmasked positions are untouched.
    for i in range(5):
        for p, label, w in zip(positions[i], out["masked_lm_ids"][i], weights[i]):
            if w:
                assert label == original[i, p]
    untouched = np.ones_like(masked, dtype=bool)
    for i in range(400):
        untouched[i, positions[i][weights[i] > 0]] = False
    assert (masked[untouched] == original[untouched]).all()


def test_positions_ascend_and_never_touch_specials_or_padding():
    rows = batch(*[layout([1, 3, 2] * 5, [2, 1] * 4, width=64) for _ in range(30)])
    out = mask_dynamic(*rows, np.arange(30), epoch=0, seed=0,
                       config=config(ngram_lengths=(1, 2, 3), ngram_weights=(0.5, 0.3, 0.2)))
    for r in range(30):
        pos = masked_positions(out, r)
        assert pos == sorted(pos) and pos
        cand = masking.padded_rows(*[np.asarray(c)[r:r + 1] for c in rows]).candidate[0]
        assert all(cand[p] for p in pos)


def test_dynamic_masks_depend_on_seed_epoch_and_index_only():
    one = batch(*[layout([1, 2] * 8, [2, 1] * 8) for _ in range(16)])
    index = np.arange(100, 116)
    cfg = config(ngram_lengths=(1, 2, 3, 4), ngram_weights=(0.4, 0.3, 0.2, 0.1))
    whole = mask_dynamic(*one, index, epoch=2, seed=5, config=cfg)
    # Rows in another order and in batches of 3: the same mask per index.
    perm = np.random.default_rng(0).permutation(16)
    for start in range(0, 16, 3):
        rows = perm[start:start + 3]
        part = mask_dynamic(*[c[rows] for c in one], index[rows], epoch=2, seed=5, config=cfg)
        for k, r in enumerate(rows):
            assert (part["input_ids"][k] == whole["input_ids"][r]).all()
            assert (part["masked_lm_positions"][k] == whole["masked_lm_positions"][r]).all()
    other_epoch = mask_dynamic(*one, index, epoch=3, seed=5, config=cfg)
    other_seed = mask_dynamic(*one, index, epoch=2, seed=6, config=cfg)
    for other in (other_epoch, other_seed):
        assert (other["masked_lm_positions"] != whole["masked_lm_positions"]).any(axis=1).sum() \
            >= 14


def spans_of(rows, out, r):
    """Masked spans of row r as lists of word indexes (consecutive masked words)."""
    ids, mask, seg, starts = (np.asarray(c)[r] for c in rows)
    pos = set(masked_positions(out, r))
    word_starts = [i for i in range(len(starts)) if starts[i]]
    spans, current, prev_end = [], [], None
    for w, s in enumerate(word_starts):
        end = s + 1
        while end < len(starts) and mask[end] and not starts[end] and ids[end] != SEP:
            end += 1
        whole = all(p in pos for p in range(s, end))
        assert whole or not any(p in pos for p in range(s, end)), "a word masked in part"
        if whole and current and prev_end == s and seg[s] == seg[current[-1][0]]:
            current.append((s, end))
        elif whole:
            if current:
                spans.append(current)
            current = [(s, end)]
        else:
            if current:
                spans.append(current)
            current = []
        prev_end = end
    if current:
        spans.append(current)
    return spans


def test_ngram_spans_are_whole_words_inside_one_segment():
    rows = batch(*[layout([1, 2, 1, 3, 1], [2, 1, 1], width=20) for _ in range(200)])
    cfg = config(ngram_lengths=(4,), ngram_weights=(1.0,), masked_lm_prob=0.5)
    out = mask_dynamic(*rows, np.arange(200), epoch=0, seed=1, config=cfg)
    seg = rows[2]
    for r in range(200):
        pos = masked_positions(out, r)
        assert len(pos) <= masking.budget(np.array([15]), cfg)[0]
        segments = {int(seg[r][p]) for p in pos}
        # Spans of 4 words: A's first four words, then A's fifth word alone (cut at [SEP]);
        # B's three words (cut). Masked tokens of a row come from whole spans (or the prefix
        # of the last one), so a masked set never joins A and B into one span.
        for span in spans_of(rows, out, r):
            assert len({int(seg[r][s]) for s, _ in span}) == 1
        assert segments <= {0, 1}


def test_ngram_partition_example_by_hand():
    # Lengths (2,): A's words [1,1,1] -> spans {w0,w1}, {w2} (cut at [SEP]); budget
    # round(5 * 0.5) = 2 (half to even) tokens: either the span {w0,w1} (2 tokens), or {w2}
    # (1 token) and then the first word of {w0,w1} (the shortened next span, 1 token).
    rows = batch(*[layout([1, 1, 1], None) for _ in range(300)])
    cfg = config(ngram_lengths=(2,), ngram_weights=(1.0,), masked_lm_prob=0.5)
    out = mask_dynamic(*rows, np.arange(300), epoch=0, seed=2, config=cfg)
    seen = {tuple(masked_positions(out, r)) for r in range(300)}
    assert seen == {(1, 2), (1, 3)}


def test_ngram_shares_follow_the_weights_when_the_budget_holds_many_spans():
    # Budget round(182 * 0.5) = 91 tokens, about 30 spans: the one shortened span per row
    # (the budget's end) and the one cut per segment hardly move the shares.
    rows = batch(*[layout([1, 2] * 60, None, width=256) for _ in range(300)])
    cfg = config(max_predictions_per_seq=200, masked_lm_prob=0.5, ngram_lengths=(1, 2, 3, 4),
                 ngram_weights=(0.4, 0.3, 0.2, 0.1))
    prows = masking.padded_rows(*rows)
    draws = masking.CounterDraws(masking.dynamic_row_keys(0, 0, np.arange(300)))
    masked = mask_rows(prows, cfg, draws)
    counts = np.bincount(masked.spans, minlength=5)[1:]
    shares = counts / counts.sum()
    assert np.abs(shares - np.array([0.4, 0.3, 0.2, 0.1])).max() < 0.03, shares


def test_sequential_draws_are_the_static_pipeline_order():
    rows = batch(*[layout([1, 2, 1], [2, 1]) for _ in range(4)])
    prows = masking.padded_rows(*rows)
    a = mask_rows(prows._replace(ids=prows.ids.copy()), config(),
                  masking.SequentialDraws(np.random.default_rng(9)))
    b = mask_rows(prows._replace(ids=prows.ids.copy()), config(),
                  masking.SequentialDraws(np.random.default_rng(9)))
    assert (a.ids == b.ids).all() and (a.chosen == b.chosen).all()


@pytest.mark.parametrize("lengths,weights,message", [
    ("1,2", "0.5,0.4", "sum to 1"),
    ("1,2,3", "0.5,0.5", "3 span lengths"),
    ("0,1", None, ">= 1"),
    ("2,1", None, "increasing"),
    ("1,x", None, "span lengths"),
    ("1,2", "a,b", "numbers"),
    ("1,2", "-0.5,1.5", ">= 0"),
])
def test_bad_ngram_settings_are_refused(lengths, weights, message):
    with pytest.raises(ValueError, match=message):
        parse_ngram(lengths, weights)


def test_ngram_defaults():
    assert parse_ngram(None, None) == ((1,), (1.0,))
    lengths, weights = parse_ngram("1,2,3", "harmonic")
    assert lengths == (1, 2, 3)
    assert np.allclose(weights, np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3))


def test_config_round_trips_through_the_manifest():
    cfg = config(ngram_lengths=(1, 2, 3, 4), ngram_weights=(0.4, 0.3, 0.2, 0.1))
    assert MaskingConfig.from_manifest(cfg.to_manifest(), VOCAB) == cfg
    with pytest.raises(ValueError, match="mask_id"):
        config(mask_id=VOCAB)



def test_key_order_is_the_stable_order_of_real_keys_even_when_they_tie():
    # Rows long enough for numpy's default sort to move equal keys (it keeps short rows in
    # order): real keys with many ties, then NO_KEY columns whose order does not matter.
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 6, (64, 300)) / 10.0
    count = rng.integers(100, 300, 64)
    keys[np.arange(300)[None, :] >= count[:, None]] = masking.NO_KEY
    stable = np.argsort(keys, axis=1, kind="stable")
    assert not (np.argsort(keys, axis=1) == stable).all()  # the fallback has work to do
    order = masking._key_order(keys)
    for row, n in enumerate(count):
        assert (order[row, :n] == stable[row, :n]).all()
    distinct = rng.random((64, 300))
    distinct[np.arange(300)[None, :] >= count[:, None]] = masking.NO_KEY
    order = masking._key_order(distinct)
    stable = np.argsort(distinct, axis=1, kind="stable")
    for row, n in enumerate(count):
        assert (order[row, :n] == stable[row, :n]).all()
