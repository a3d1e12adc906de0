"""The CRF against brute force: every one of the K^T paths of tiny sequences, enumerated."""

import itertools

import pytest
import torch

from shared.zoo.crf import CRF

NUM_TAGS = 3
LENGTHS = [4, 2, 3]  # different lengths, not sorted
PAD_TAG = -100


def tiny_batch(seed: int = 0) -> tuple[CRF, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A CRF with large transitions (so they matter), emissions, gold tags and mask."""
    torch.manual_seed(seed)
    crf = CRF(NUM_TAGS)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    batch, steps = len(LENGTHS), max(LENGTHS)
    emissions = torch.randn(batch, steps, NUM_TAGS)
    mask = torch.arange(steps) < torch.tensor(LENGTHS).unsqueeze(1)  # (B, T)
    tags = torch.randint(0, NUM_TAGS, (batch, steps)).masked_fill(~mask, PAD_TAG)
    return crf, emissions, tags, mask


def path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """The score of one path through one sequence's real emissions (L, K), term by term."""
    score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    for t, tag in enumerate(path):
        score = score + emissions[t, tag]
        if t:
            score = score + crf.transitions[path[t - 1], tag]
    return float(score)


def all_paths(length: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(NUM_TAGS), repeat=length))


def brute_log_partition(crf: CRF, emissions: torch.Tensor) -> float:
    scores = torch.tensor([path_score(crf, emissions, p) for p in all_paths(len(emissions))])
    return float(torch.logsumexp(scores.double(), dim=0))


def test_partition_function_matches_enumeration():
    crf, emissions, _, mask = tiny_batch()
    with torch.no_grad():
        forward = crf._log_partition(emissions, mask)
        for row, length in enumerate(LENGTHS):
            expected = brute_log_partition(crf, emissions[row, :length])
            assert forward[row].item() == pytest.approx(expected, abs=1e-5)


def test_log_likelihood_is_path_score_minus_log_partition():
    crf, emissions, tags, mask = tiny_batch()
    with torch.no_grad():
        likelihood = crf.log_likelihood(emissions, tags, mask)
        assert likelihood.shape == (len(LENGTHS),)
        for row, length in enumerate(LENGTHS):
            real = emissions[row, :length]
            path = tuple(tags[row, :length].tolist())
            expected = path_score(crf, real, path) - brute_log_partition(crf, real)
            assert likelihood[row].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_is_the_argmax_path(seed):
    crf, emissions, _, mask = tiny_batch(seed)
    decoded = crf.decode(emissions, mask)
    assert [len(path) for path in decoded] == LENGTHS
    with torch.no_grad():
        for row, length in enumerate(LENGTHS):
            real = emissions[row, :length]
            best = max(all_paths(length), key=lambda path: path_score(crf, real, path))
            assert decoded[row] == list(best)


@pytest.mark.parametrize("row", range(len(LENGTHS)))
def test_probabilities_of_all_paths_sum_to_one(row):
    crf, emissions, _, _ = tiny_batch()
    length = LENGTHS[row]
    paths = torch.tensor(all_paths(length))  # (K^L, L): one batch row per path
    repeated = emissions[row, :length].expand(len(paths), -1, -1)  # (K^L, L, K)
    with torch.no_grad():
        likelihood = crf.log_likelihood(repeated, paths, torch.ones_like(paths, dtype=torch.bool))
    assert likelihood.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_padding_changes_nothing(seed):
    crf, emissions, tags, mask = tiny_batch(seed)
    # Garbage at padding, and another value for padded tags: neither may count.
    garbage = emissions.masked_fill(~mask.unsqueeze(2), float("nan")).requires_grad_(True)
    batched = crf.log_likelihood(garbage, tags, mask)
    torch.testing.assert_close(
        crf.log_likelihood(garbage, tags.masked_fill(~mask, 0), mask), batched
    )
    decoded = crf.decode(garbage, mask)
    for row, length in enumerate(LENGTHS):
        alone = emissions[row : row + 1, :length]
        alone_tags, alone_mask = tags[row : row + 1, :length], mask[row : row + 1, :length]
        torch.testing.assert_close(
            batched[row], crf.log_likelihood(alone, alone_tags, alone_mask)[0]
        )
        assert decoded[row] == crf.decode(alone, alone_mask)[0]
    batched.sum().backward()
    assert garbage.grad is not None and garbage.grad.isfinite().all()
    assert (garbage.grad[~mask] == 0).all()


def test_reductions():
    crf, emissions, tags, mask = tiny_batch()
    likelihood = crf.log_likelihood(emissions, tags, mask)
    loss = {r: crf.neg_log_likelihood(emissions, tags, mask, r) for r in ("mean", "sum")}
    loss["token_mean"] = crf.neg_log_likelihood(emissions, tags, mask, reduction="token_mean")
    torch.testing.assert_close(loss["sum"], -likelihood.sum())
    torch.testing.assert_close(loss["mean"], -likelihood.mean())
    torch.testing.assert_close(loss["token_mean"], -likelihood.sum() / sum(LENGTHS))
    assert all(value.dim() == 0 for value in loss.values())
    with pytest.raises(ValueError, match="unknown reduction 'max'; valid: mean, sum, token_mean"):
        crf.neg_log_likelihood(emissions, tags, mask, reduction="max")


def test_shape_errors_say_what_was_expected():
    crf, emissions, tags, mask = tiny_batch()
    with pytest.raises(ValueError, match=r"emissions must be \(B, T, 3\), got \(3, 4, 2\)"):
        crf.decode(emissions[:, :, :2], mask)
    with pytest.raises(ValueError, match=r"mask must be \(3, 4\), got \(3, 3\)"):
        crf.log_likelihood(emissions, tags, mask[:, :3])


def test_half_precision_emissions_are_scored_in_float32():
    crf, emissions, tags, mask = tiny_batch()
    low = emissions.to(torch.bfloat16)
    likelihood = crf.log_likelihood(low, tags, mask)
    assert likelihood.dtype == torch.float32
    torch.testing.assert_close(likelihood, crf.log_likelihood(low.float(), tags, mask))
    assert crf.decode(low, mask) == crf.decode(low.float(), mask)
    encoder = torch.nn.Linear(5, NUM_TAGS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emitted = encoder(torch.randn(len(LENGTHS), max(LENGTHS), 5))  # (B, T, K) in bf16
        loss = crf.neg_log_likelihood(emitted, tags, mask)
    assert emitted.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.isfinite().all()


def test_training_raises_the_gold_log_likelihood():
    crf, _, tags, mask = tiny_batch()
    torch.manual_seed(1)
    features = torch.randn(len(LENGTHS), max(LENGTHS), 5)  # (B, T, F)
    encoder = torch.nn.Linear(5, NUM_TAGS)
    parameters = [*encoder.parameters(), *crf.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=0.05)

    def gold_log_likelihood() -> float:
        with torch.no_grad():
            return crf.log_likelihood(encoder(features), tags, mask).sum().item()

    before = gold_log_likelihood()
    for _ in range(20):
        optimizer.zero_grad()
        crf.neg_log_likelihood(encoder(features), tags, mask).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)
        optimizer.step()
    assert gold_log_likelihood() > before + 1.0
