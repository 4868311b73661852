"""Interpolation, diversity and fluency numbers, each checked where the answer is known.

A path that decodes [A, A, B, B] is monotone, ends on its endpoints (BLEU 100) and changes
at one of its three steps; identical samples have self-BLEU 100; an LM's perplexity of a
text is exp of the loss transformers computes for it; and an oracle model whose codes
decode to the nearest real sentence interpolates exactly so.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import sacrebleu
import torch

from textvae.data.synthetic import vocabulary
from textvae.errors import InvalidArgument
from textvae.evaluation.fluency import SMOLLM2, FluencyLM, default_fluency_lm, start_token
from textvae.evaluation.generation_quality import (
    distinct_n,
    evaluate_generation,
    markdown_rows,
    path_scores,
    self_bleu,
)

A, B = "5 6 7 8 9", "10 11 12 13"


# --------------------------------------------------------------------------- paths


def test_a_path_that_jumps_once_from_a_to_b_is_monotone_and_changes_at_one_step_of_three():
    scores = path_scores([[A, A, B, B]], [(A, B)])
    assert scores["interpolation_bleu_start"] == pytest.approx(100)
    assert scores["interpolation_bleu_end"] == pytest.approx(100)
    assert scores["interpolation_corpus_bleu_start"] == pytest.approx(100)
    assert scores["interpolation_corpus_bleu_end"] == pytest.approx(100)
    assert scores["interpolation_monotone"] == 1.0
    assert scores["interpolation_step_change"] == pytest.approx(1 / 3)


def test_a_path_that_goes_back_is_not_monotone_and_shares_are_over_all_paths():
    scores = path_scores([[A, B, A, B], [A, A, B, B]], [(A, B), (A, B)])
    assert scores["interpolation_monotone"] == 0.5
    assert scores["interpolation_step_change"] == pytest.approx((3 + 1) / 6)


def test_a_path_that_never_moves_ends_off_b_and_never_changes():
    scores = path_scores([[A, A, A]], [(A, B)])
    assert scores["interpolation_bleu_start"] == pytest.approx(100)
    assert scores["interpolation_bleu_end"] == 0.0  # no token of B
    assert scores["interpolation_step_change"] == 0.0


def test_path_scores_refuse_paths_without_two_points():
    with pytest.raises(InvalidArgument):
        path_scores([[A]], [(A, B)])


# --------------------------------------------------------------------------- diversity


def test_distinct_2_counts_unique_bigrams_over_all():
    assert distinct_n(["a b c"] * 10) == pytest.approx(2 / 20)
    assert distinct_n(["a b c", "c d e"]) == 1.0
    assert distinct_n(["a", ""]) == 0.0  # no bigram at all


def test_identical_samples_have_self_bleu_100_and_disjoint_ones_0():
    assert self_bleu(["a b c d e"] * 5) == pytest.approx(100)
    assert self_bleu(["a b c", "d e f", "g h i"]) == 0.0


def test_self_bleu_is_sacrebleu_leave_one_out_on_any_texts():
    rng = random.Random(0)
    texts = [" ".join(rng.choices("abcdef", k=rng.randint(0, 9))) for _ in range(40)]
    texts += [texts[3], texts[3], "a a a a a a", "a"]  # duplicates, repeated n-grams, a 1-gram
    expected = sum(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1 :], tokenize="none").score
                   for i, t in enumerate(texts)) / len(texts)
    assert self_bleu(texts) == pytest.approx(expected, abs=1e-9)


def test_self_bleu_needs_two_samples():
    with pytest.raises(InvalidArgument, match="at least 2"):
        self_bleu(["a b"])


# --------------------------------------------------------------------------- fluency LM


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, backbones) -> FluencyLM:
    return FluencyLM.load(str(backbones / request.param))


WORDS = sorted(vocabulary())


def test_the_lms_perplexity_of_one_text_is_exp_of_its_own_loss(lm):
    text = " ".join(WORDS[:7])
    start = lm.tokenizer.convert_tokens_to_ids(start_token(lm.tokenizer))
    ids = [start, *lm.tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        loss = lm.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert lm.perplexity([text]) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert lm.total_nll([text])[1] == len(ids) - 1


def test_batched_padded_scoring_equals_one_text_at_a_time(lm):
    texts = [" ".join(WORDS[i : i + n]) for i, n in ((0, 3), (5, 9), (20, 1), (30, 6))]
    nll, tokens = lm.total_nll(texts, batch_size=3)
    alone = [lm.total_nll([t]) for t in texts]
    assert tokens == sum(n for _, n in alone)
    assert nll == pytest.approx(sum(x for x, _ in alone), rel=1e-5)


def test_the_lm_finds_its_own_greedy_text_more_fluent_than_the_same_text_with_its_last_word_changed(lm):
    """Same prefix, and the greedy last token is the argmax given it: any other last word scores lower."""
    start = lm.tokenizer.convert_tokens_to_ids(start_token(lm.tokenizer))
    specials = list(lm.tokenizer.all_special_ids)
    with torch.no_grad():
        out = lm.model.generate(torch.tensor([[start]]), max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                attention_mask=torch.ones(1, 1, dtype=torch.long), pad_token_id=start,
                                suppress_tokens=specials)
    own = out[0, 1:].tolist()
    other = next(i for i in lm.tokenizer.convert_tokens_to_ids(WORDS) if i != own[-1])
    text, changed = lm.tokenizer.decode(own), lm.tokenizer.decode([*own[:-1], other])
    assert lm.tokenizer(text, add_special_tokens=False)["input_ids"] == own  # the text spells the same tokens
    assert lm.perplexity([text]) < lm.perplexity([changed])


def test_texts_start_after_the_document_separator_where_the_lm_has_one(lm):
    expected = "<|endoftext|>" if "<|endoftext|>" in lm.tokenizer.get_vocab() else lm.tokenizer.bos_token
    assert start_token(lm.tokenizer) == expected == {"gpt2": "<|endoftext|>", "llama": "<s>"}[lm.model.config.model_type]


def test_empty_texts_predict_nothing(lm):
    assert lm.total_nll(["", "   "]) == (0.0, 0)
    assert lm.perplexity([""]) is None


def test_a_missing_or_misnamed_lm_is_one_invalid_argument(tmp_path, backbones):
    with pytest.raises(InvalidArgument, match="fluency_lm: cannot load a causal LM from"):
        FluencyLM.load(str(tmp_path / "absent"))
    (tmp_path / "model.gguf").write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="is a file"):
        FluencyLM.load(str(tmp_path / "model.gguf"))
    with pytest.raises(InvalidArgument, match="fluency_lm_gguf: no file x.gguf"):
        FluencyLM.load(str(backbones / "gpt2"), gguf_file="x.gguf")
    with pytest.raises(InvalidArgument, match="fluency_lm: cannot load"):  # an encoder has no causal-LM head
        FluencyLM.load(str(backbones / "distilbert"))


def test_the_default_lm_is_smollm2_only_where_it_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    monkeypatch.setenv("TEXTVAE_PRETRAINED", str(tmp_path))
    assert default_fluency_lm() is None
    (tmp_path / SMOLLM2[0]).mkdir()
    (tmp_path / SMOLLM2[0] / SMOLLM2[1]).write_bytes(b"")
    assert default_fluency_lm() == (str(tmp_path / SMOLLM2[0]), SMOLLM2[1])


# --------------------------------------------------------------------------- the whole evaluation


class Oracle:
    """A model whose code of sentence i is 10 e_i and which decodes any code to its nearest
    sentence: a straight path from A to B decodes to A up to half-way, then to B."""

    has_latent = True

    def __init__(self, rows: list[list[int]]):
        self.rows = rows
        self.mu = 10 * torch.eye(len(rows))
        self.config = SimpleNamespace(latent_size=len(rows), decoder_type="lstm")
        self.device = torch.device("cpu")
        self.tokenizer = SimpleNamespace(
            batch_decode=lambda ids, skip_special_tokens=True: [" ".join(WORDS[i] for i in row) for row in ids])

    def decode_ids(self, z: torch.Tensor, max_length: int) -> list[list[int]]:
        nearest = torch.cdist(z.float(), self.mu).argmin(dim=1)
        return [self.rows[i][1:-1][:max_length] for i in nearest.tolist()]


SENTENCES = [[1, *range(10 + 3 * i, 14 + 3 * i), 2] for i in range(9)]  # <bos> 4 distinct words <eos>


def test_an_oracle_interpolates_monotonically_and_exactly_and_reads_as_fluent_as_real_text(backbones):
    oracle = Oracle(SENTENCES)
    lm = FluencyLM.load(str(backbones / "gpt2"))
    report = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=50, steps=4, samples=0, seed=3, fluency=lm,
                                 progress=False)
    numbers = report.numbers
    assert report.protocol["interpolation_pairs"] == 4 and report.protocol["interpolation_pairs_asked"] == 50
    assert numbers["interpolation_bleu_start"] == pytest.approx(100)
    assert numbers["interpolation_bleu_end"] == pytest.approx(100)
    assert numbers["interpolation_monotone"] == 1.0
    assert numbers["interpolation_step_change"] == pytest.approx(1 / 3)
    # Every point decodes to one of the pairs' ends, each end twice: the same text as the real sentences.
    assert numbers["fluency_ratio_interpolation"] == pytest.approx(1.0, rel=1e-5)
    assert numbers["fluency_ppl_interpolation"] == pytest.approx(numbers["fluency_ppl_real"], rel=1e-5)
    assert report.protocol["fluency_real_sentences"] == 8
    assert len(report.examples["interpolation"]) == 4


def test_pairs_and_samples_follow_the_seed_and_zero_turns_each_off():
    oracle = Oracle(SENTENCES)
    first = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=2, steps=3, samples=6, seed=1, progress=False)
    again = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=2, steps=3, samples=6, seed=1, progress=False)
    assert first.numbers == again.numbers and first.examples == again.examples
    assert 0 < first.numbers["samples_distinct_2"] <= 1 and 0 <= first.numbers["samples_self_bleu"] <= 100
    assert first.protocol["fluency"] == "not computed: no fluency LM given"
    none = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=0, samples=0, progress=False)
    assert none.add_to({"protocol": {}}) == {"protocol": {}}  # nothing asked, nothing added
    only = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=0, samples=2, progress=False)
    assert "interpolation_monotone" not in only.numbers and only.protocol["interpolation_pairs"] == 0
    with pytest.raises(InvalidArgument, match="samples"):
        evaluate_generation(oracle, SENTENCES, oracle.mu, samples=1, progress=False)


def test_a_model_without_a_latent_is_not_interpolated():
    oracle = Oracle(SENTENCES)
    oracle.has_latent = False
    report = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=3, samples=2, progress=False)
    assert "interpolation_monotone" not in report.numbers and "samples_self_bleu" in report.numbers
    assert report.protocol["interpolation"].startswith("not computed")


def test_markdown_rows_show_the_numbers_and_why_fluency_is_missing():
    oracle = Oracle(SENTENCES)
    results = evaluate_generation(oracle, SENTENCES, oracle.mu, pairs=2, steps=4, samples=3, progress=False,
                                  fluency_note="skipped: no LM").add_to({"protocol": {}})
    rows = markdown_rows(results)
    assert rows[0].startswith("| Interpolation: BLEU of the first point vs A | 100 | 2 pairs x 4 steps")
    assert any(row.startswith("| Prior samples: self-BLEU |") for row in rows)
    assert rows[-1] == "| Fluency | - | skipped: no LM |"
    assert all(row.count(" | ") == 2 for row in rows)
