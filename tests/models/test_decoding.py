"""textvae.models.decoding: greedy, sampling and beam search against plain references."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from tests.models import (
    BOS,
    EOS,
    pad_batch,
    perturb_parameters,
    step_logits,
    tiny_model,
)
from textvae.models.decoding import _top_p_filter, beam_search, decode_latents, greedy_or_sample

MODELS = [
    dict(decoder_type="lstm", latent_path="invlip"),
    dict(decoder_type="lstm", latent_path="concat"),
    dict(decoder_type="transformer", latent_path="invlip"),
    dict(decoder_type="transformer", latent_path="concat"),
    dict(decoder_type="transformer", latent_path="none"),
]
IDS = ["lstm-invlip", "lstm-concat", "tf-invlip", "tf-concat", "tf-none"]


def varied_model(seed: int, eos_bias: float = 1.0, **options):
    """A random model whose decoded sentences vary with the prefix and the code, and some end.

    At the init the logits hardly depend on the prefix (one token repeated); perturbing the
    decoder and the output layer, and raising EOS, gives varied and ending sentences.
    """
    model = tiny_model(seed, **options)
    perturb_parameters(model.decoder, 0.5, seed)
    perturb_parameters(model.head.output, 0.5, seed + 1)
    with torch.no_grad():
        model.head.output.bias[EOS] += eos_bias
    return model


def codes(n: int, d: int = 4, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return 2 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def next_logprobs(model, prefix: list[int], z: torch.Tensor) -> torch.Tensor:
    """log p(. | prefix, z) recomputed from the whole prefix (no incremental state)."""
    ids = torch.tensor([[BOS, *prefix]])
    return torch.log_softmax(step_logits(model, ids, z[None])[0, -1].double(), dim=-1)


# ------------------------------------------------------------------------------ greedy


@pytest.mark.parametrize("options", MODELS, ids=IDS)
def test_greedy_is_the_chained_argmax_of_full_prefix_logits(options):
    model = varied_model(0, eos_bias=1.5, **options)
    z, max_length = codes(6), 12
    decoded = greedy_or_sample(model, z, max_length)
    for row in range(6):
        prefix = []
        with torch.no_grad():
            while len(prefix) < max_length:
                token = int(next_logprobs(model, prefix, z[row]).argmax())
                if token == EOS:
                    break
                prefix.append(token)
        assert decoded[row] == prefix, row


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_decoded_rows_never_exceed_max_length_or_contain_eos(strategy):
    model = varied_model(1, decoder_type="lstm")  # rarely emits EOS: rows run to the limit
    for max_length in (0, 1, 5):
        rows = decode_latents(model, codes(4), strategy, max_length)
        assert all(len(row) <= max_length for row in rows), (max_length, [len(r) for r in rows])
        assert all(EOS not in row for row in rows)
    assert max(len(row) for row in rows) == 5


class _ScriptedModel:
    """A stand-in for TextVAEModel whose row r prefers token 4 + r % 3 until step r, then EOS.

    After EOS it prefers a word again, so only the decoder's bookkeeping can keep a row stopped.
    """

    def __init__(self, vocab_size: int = 10):
        self.config = SimpleNamespace(bos_token_id=BOS, eos_token_id=EOS, vocab_size=vocab_size)
        self.head = SimpleNamespace(lift=lambda: None)  # no invlip map
        self.decoder = SimpleNamespace(reorder_state=lambda state, index: state.index_select(0, index))
        self.calls = 0

    def next_token_logits(self, tokens, z, state, lift=None):
        step = 0 if state is None else int(state[0])
        self.calls += 1
        rows = torch.arange(tokens.shape[0])
        logits = torch.full((tokens.shape[0], self.config.vocab_size), -5.0)
        stop = z[:, 0].long()  # the row's stopping step is carried in z
        word = 4 + rows % 3
        logits[rows, word] = 0.0
        logits[stop == step, EOS] = 1.0
        return logits, torch.full((tokens.shape[0],), step + 1)


def test_eos_stops_each_row_and_decoding_ends_when_all_rows_have():
    model = _ScriptedModel()
    stops = torch.tensor([[0.0], [3.0], [1.0]])
    assert greedy_or_sample(model, stops, max_length=20) == [[], [5, 5, 5], [6]]
    assert model.calls == 4  # the longest row's EOS is the 4th step; nothing after


def test_greedy_stops_at_once_when_every_row_ends():
    model = varied_model(2)
    with torch.no_grad():
        model.head.output.bias[EOS] += 1e4
    calls = []
    original = model.next_token_logits
    model.next_token_logits = lambda *args: calls.append(1) or original(*args)
    assert greedy_or_sample(model, codes(5), 30) == [[]] * 5
    assert len(calls) == 1


@pytest.mark.parametrize("options", MODELS[:3], ids=IDS[:3])
def test_batch_rows_decode_as_they_would_alone(options):
    model = varied_model(4, eos_bias=1.5, **options)
    z = 2 * codes(6, seed=4)
    batched = greedy_or_sample(model, z, 10)
    assert batched == [greedy_or_sample(model, z[i : i + 1], 10)[0] for i in range(6)]
    assert len({tuple(row) for row in batched}) > 1  # z matters: rows differ


# -------------------------------------------------------------------------------- beam


@pytest.mark.parametrize("options", MODELS, ids=IDS)
def test_beam_of_width_one_is_greedy(options):
    model = varied_model(4, eos_bias=1.0, **options)
    z = codes(8, seed=4)
    for length_penalty in (0.0, 1.0):
        assert beam_search(model, z, 15, beam_size=1, length_penalty=length_penalty) == greedy_or_sample(model, z, 15)


def reference_beam(model, z: torch.Tensor, max_length: int, beam_size: int, length_penalty: float) -> list[int]:
    """Textbook beam search for one code: lists and dicts, the whole prefix recomputed each step."""
    beams = [(0.0, [], False)]  # (log-prob, tokens incl. EOS, finished)
    for _ in range(max_length + 1):
        candidates = []
        for score, tokens, finished in beams:
            if finished:
                candidates.append((score, tokens, True))
                continue
            logp = next_logprobs(model, tokens, z)
            for token, value in enumerate(logp.tolist()):
                candidates.append((score + value, [*tokens, token], token == EOS))
        beams = sorted(candidates, key=lambda c: c[0], reverse=True)[:beam_size]
        if all(finished for _, _, finished in beams):
            break

    def normalised(beam):
        score, tokens, _ = beam
        length = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
        return score / max(length, 1) ** length_penalty

    tokens = max(beams, key=normalised)[1]
    return tokens[: tokens.index(EOS)] if EOS in tokens else tokens[:max_length]


@pytest.mark.parametrize("options", MODELS[:3], ids=IDS[:3])
@pytest.mark.parametrize("beam_size,length_penalty", [(3, 0.0), (4, 1.0)])
def test_beam_search_matches_a_textbook_implementation(options, beam_size, length_penalty):
    model = varied_model(5, eos_bias=1.5, **options).double()
    z = codes(4, seed=5, dtype=torch.float64)
    with torch.no_grad():
        expected = [reference_beam(model, z[i], 8, beam_size, length_penalty) for i in range(4)]
    assert beam_search(model, z, 8, beam_size=beam_size, length_penalty=length_penalty) == expected


def decoder_objective(model, z: torch.Tensor, outputs: list[list[int]], max_length: int) -> torch.Tensor:
    """The log-probability both decoders maximise, for each output token list (one code z).

    A row shorter than ``max_length`` ended with EOS; a row of ``max_length`` tokens either
    ended with EOS or was cut after one more token, the best one in both decoders.
    """
    ids, mask = pad_batch(outputs)
    lengths = torch.tensor([len(tokens) for tokens in outputs])
    cut = lengths == max_length
    mask[cut, lengths[cut] + 1] = 0  # for a cut row, the words only ...
    zs = z.expand(len(outputs), -1)
    score = model.log_likelihood(ids, zs, mask)
    with torch.no_grad():  # ... plus the best next token
        logits = step_logits(model, ids[:, :-1], zs)[torch.arange(len(outputs)), lengths]
    return score + torch.where(cut, torch.log_softmax(logits.double(), -1).max(-1).values, 0.0)


@pytest.mark.parametrize("options", MODELS, ids=IDS)
def test_beam_wide_enough_to_keep_every_prefix_beats_greedy_and_finds_the_best(options):
    """With width >= V^max_length the greedy prefix can only leave the beam at the last step,
    i.e. when better hypotheses push it out: then the best beam is at least as good as greedy
    (not a theorem for narrower beams). It must also match an exhaustive search."""
    vocab, max_length = 8, 2
    model = varied_model(6, eos_bias=0.5, vocab_size=vocab, invlip_state_size=2, **options).double()
    z = codes(5, seed=6, dtype=torch.float64)
    beams = beam_search(model, z, max_length, beam_size=vocab**max_length, length_penalty=0.0)
    greedy = greedy_or_sample(model, z, max_length)
    # exhaustive: every sentence of <= max_length words (with EOS, or cut after max_length)
    words = [t for t in range(vocab) if t != EOS]
    everything = [list(s) for n in range(max_length + 1) for s in itertools.product(words, repeat=n)]
    for i in range(5):
        beam_score, greedy_score = decoder_objective(model, z[i], [beams[i], greedy[i]], max_length)
        assert float(beam_score) >= float(greedy_score) - 1e-9
        best = float(decoder_objective(model, z[i], everything, max_length).max())
        assert float(beam_score) == pytest.approx(best, abs=1e-9)


# ---------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    model = varied_model(7, eos_bias=1.0)
    z = codes(6, seed=7)

    def draw(seed):
        return greedy_or_sample(model, z, 12, sample=True, generator=torch.Generator().manual_seed(seed))

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    assert decode_latents(model, z, "sample", 12, generator=torch.Generator().manual_seed(0)) == draw(0)


@pytest.mark.parametrize("options", [dict(temperature=1e-8), dict(top_p=1e-6)], ids=["cold", "nucleus-1"])
def test_sampling_in_the_greedy_limit_is_greedy(options):
    model = varied_model(8, eos_bias=1.0)
    z = codes(6, seed=8)
    sampled = greedy_or_sample(model, z, 12, sample=True, generator=torch.Generator().manual_seed(0), **options)
    assert sampled == greedy_or_sample(model, z, 12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_first_sampled_token_follows_the_tempered_softmax(temperature):
    model = varied_model(9)
    z = codes(1, seed=9).expand(6000, -1)
    rows = greedy_or_sample(model, z, 1, sample=True, temperature=temperature, generator=torch.Generator().manual_seed(1))
    first = torch.tensor([row[0] if row else EOS for row in rows])
    observed = torch.bincount(first, minlength=model.config.vocab_size).double() / len(rows)
    with torch.no_grad():
        expected = torch.softmax(next_logprobs(model, [], z[0]) / temperature, dim=-1)
    assert 0.5 * float((observed - expected).abs().sum()) < 0.04  # total variation


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    torch.testing.assert_close(_top_p_filter(probs, 0.5), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(_top_p_filter(probs, 0.8), torch.tensor([[0.0, 0.625, 0.0, 0.375]]))
    torch.testing.assert_close(_top_p_filter(probs, 0.81), torch.tensor([[0.0, 0.5, 0.15, 0.3]]) / 0.95)
    torch.testing.assert_close(_top_p_filter(probs, 1.0), probs)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        decode_latents(tiny_model(0), codes(1), "nucleus")
