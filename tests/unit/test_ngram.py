"""The Kneser-Ney n-gram: normalised distributions (pruned too), exact top-k, better than a
unigram, and its ARPA file read by KenLM gives the same probabilities."""
import numpy as np
import pytest
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary
from support import SHARED_DATA, needs_shared_data

from streamrnn.lm import Vocabulary
from streamrnn.tools.ngram import KneserNey, NgramModel, kneser_ney
from streamrnn.train.corpus import corpus_sentences
from streamrnn.train.lm import stream_ids

VOCAB = 50


@pytest.fixture(scope="module")
def markov_stream():
    """Ids from a random first-order Markov chain with a few strong transitions."""
    rng = np.random.default_rng(0)
    transitions = rng.dirichlet(np.full(VOCAB - 5, 0.1), size=VOCAB)
    ids = [0]
    for _ in range(20000):
        ids.append(int(rng.choice(VOCAB - 5, p=transitions[ids[-1]])))
    return np.array(ids)  # the last 5 ids never occur


BOS, EOS, UNK = 0, 1, 2
WORDS = ["<s>", "</s>", "<unk>"] + [f"W{i}" for i in range(VOCAB - 3)]


@pytest.fixture(scope="module")
def sentences():
    """Sentences of ids 3..VOCAB-1 (Zipf-like, so counts vary), each between BOS and EOS."""
    rng = np.random.default_rng(1)
    ids = []
    for _ in range(3000):
        ids += [BOS] + list(3 + rng.zipf(1.4, size=rng.integers(0, 12)) % (VOCAB - 3)) + [EOS]
    return np.array(ids)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_distributions_sum_to_one_over_the_vocabulary(markov_stream, order):
    model = KneserNey(markov_stream, VOCAB, order)
    for history in ([], [3], [0, 1], [7, 7, 7], [49, 48], list(markov_stream[100:103])):
        probs = model.distribution(history)
        assert probs.min() > 0
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_top_words_are_the_most_likely(markov_stream):
    model = KneserNey(markov_stream, VOCAB, 3)
    for history in ([1, 2], [4], [49, 49], list(markov_stream[500:502])):
        probs = model.distribution(history)
        probs[[0, 1]] = -1
        expected = np.argsort(-probs, kind="stable")[:3]
        assert model.top(history, 3, excluded=(0, 1)) == [int(w) for w in expected]


def test_probabilities_of_seen_trigrams_follow_the_counts(markov_stream):
    model = KneserNey(markov_stream, VOCAB, 3)
    a, b = markov_stream[10:12]
    counts = np.bincount([markov_stream[i + 2] for i in range(len(markov_stream) - 2)
                          if markov_stream[i] == a and markov_stream[i + 1] == b], minlength=VOCAB)
    probs = model.distribution([a, b])
    assert np.argmax(probs) == np.argmax(counts)


def test_kneser_ney_beats_a_unigram_on_held_out_text():
    needs_shared_data()
    train = corpus_sentences([SHARED_DATA / "text" / "inaugural"])
    test = corpus_sentences([SHARED_DATA / "text" / "state_union"])[:300]
    counts = {}
    for sentence in train:
        for word in sentence:
            counts[word] = counts.get(word, 0) + 1
    vocabulary = Vocabulary(sorted(counts, key=counts.get, reverse=True)[:3000])
    train_ids, test_ids = (np.concatenate([[0], stream_ids(s, vocabulary).numpy()]) for s in (train, test))

    def perplexity(order):
        model = KneserNey(train_ids, len(vocabulary), order)
        histories = model.histories([test_ids[max(0, i - 2):i + 1] for i in range(len(test_ids) - 1)])
        return float(np.exp(-np.log(model.probabilities(histories, test_ids[1:])).mean()))

    assert perplexity(3) < 0.8 * perplexity(1)
    assert perplexity(3) < perplexity(2)


def test_bad_training_data_is_refused():
    with pytest.raises(ValueError, match="each in 0..9"):
        KneserNey([0, 3, 12], 10, 2)
    with pytest.raises(ValueError, match="order"):
        KneserNey([0, 1, 2], 10, 0)


@pytest.mark.parametrize("min_counts", [[1, 1, 1], [1, 2, 3], [1, 3, 3]])
def test_pruned_sentence_models_stay_normalised(sentences, min_counts):
    model = NgramModel(kneser_ney(sentences, VOCAB, 3, BOS, EOS, min_counts), VOCAB, pad=BOS)
    for history in ([BOS], [BOS, 3], [3, 4], [5, 7], [VOCAB - 1, VOCAB - 2], [3], [UNK, 3]):
        probs = model.distribution(history)
        assert probs[BOS] == 0 and probs[EOS:].min() > 0  # <s> never comes next
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_pruning_drops_rare_ngrams(sentences):
    full = kneser_ney(sentences, VOCAB, 3, BOS, EOS, [1, 1, 1])
    pruned = kneser_ney(sentences, VOCAB, 3, BOS, EOS, [1, 2, 3])
    assert len(pruned[0].keys) == len(full[0].keys) == VOCAB
    assert len(pruned[1].keys) < len(full[1].keys) and len(pruned[2].keys) < len(full[2].keys) / 2


def test_kenlm_reads_the_arpa_file_as_the_model_means_it(sentences, tmp_path):
    model = NgramModel(kneser_ney(sentences, VOCAB, 3, BOS, EOS, [1, 2, 3]), VOCAB, pad=BOS)
    model.write_arpa(tmp_path / "lm.arpa", WORDS, bos=BOS)
    kenlm = KenLM(str(tmp_path / "lm.arpa"), Dictionary(WORDS))
    rng = np.random.default_rng(2)
    for sentence in [[3, 4, 5], [3, 3, 3, 3], [VOCAB - 1, 7, UNK]] + [list(3 + rng.integers(0, 20, 6)) for _ in range(5)]:
        state, history = kenlm.start(False), [BOS]
        for word in sentence + [EOS]:
            state, score = kenlm.score(state, word) if word != EOS else kenlm.finish(state)
            expected = np.log10(model.probabilities(model.histories([history]), [word])[0])
            assert score == pytest.approx(expected, abs=1e-4)
            history.append(word)


def test_bad_min_counts_are_refused(sentences):
    for min_counts in ([1, 2], [2, 2, 2], [1, 3, 2]):
        with pytest.raises(ValueError, match="minimum counts"):
            kneser_ney(sentences, VOCAB, 3, BOS, EOS, min_counts)
