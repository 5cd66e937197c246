"""ctcdecode's own decoder tests, run against `asr.beam_search` (the peer spec of its API).

Ported from parlance/ctcdecode, tests/python/test_decode.py (MIT licence): the five offline tests
and the five online ones, with the same inputs and expected strings; the hotword tests are left
out (hotwords are not part of this toolkit's API). The word LM tests/data/ctcdecode/test.arpa is
ctcdecode's tests/python/test.arpa, itself KenLM's lm/test.arpa (LGPL) plus a few words.
"""
from pathlib import Path

import pytest
import torch

from asr.beam_search import CTCBeamDecoder, DecoderState, OnlineCTCBeamDecoder

pytest.importorskip("flashlight.lib.text.decoder")

LM_PATH = str(Path(__file__).parent / "data" / "ctcdecode" / "test.arpa")
VOCAB = ["'", " ", "a", "b", "c", "d", "_"]
BLANK = VOCAB.index("_")
BEAM_SIZE = 20
PROBS_SEQ1 = [
    [0.06390443, 0.21124858, 0.27323887, 0.06870235, 0.0361254, 0.18184413, 0.16493624],
    [0.03309247, 0.22866108, 0.24390638, 0.09699597, 0.31895462, 0.0094893, 0.06890021],
    [0.218104, 0.19992557, 0.18245131, 0.08503348, 0.14903535, 0.08424043, 0.08120984],
    [0.12094152, 0.19162472, 0.01473646, 0.28045061, 0.24246305, 0.05206269, 0.09772094],
    [0.1333387, 0.00550838, 0.00301669, 0.21745861, 0.20803985, 0.41317442, 0.01946335],
    [0.16468227, 0.1980699, 0.1906545, 0.18963251, 0.19860937, 0.04377724, 0.01457421],
]
PROBS_SEQ2 = [
    [0.08034842, 0.22671944, 0.05799633, 0.36814645, 0.11307441, 0.04468023, 0.10903471],
    [0.09742457, 0.12959763, 0.09435383, 0.21889204, 0.15113123, 0.10219457, 0.20640612],
    [0.45033529, 0.09091417, 0.15333208, 0.07939558, 0.08649316, 0.12298585, 0.01654384],
    [0.02512238, 0.22079203, 0.19664364, 0.11906379, 0.07816055, 0.22538587, 0.13483174],
    [0.17928453, 0.06065261, 0.41153005, 0.1172041, 0.11880313, 0.07113197, 0.04139363],
    [0.15882358, 0.1235788, 0.23376776, 0.20510435, 0.00279306, 0.05294827, 0.22298418],
]
BEAM_SEARCH_RESULT = ["acdc", "b'a", "a a"]


def convert_to_string(tokens, vocab, seq_len) -> str:
    return "".join(vocab[x] for x in tokens[0:seq_len])


def best(beam_results, out_seq_len, b=0) -> str:
    return convert_to_string(beam_results[b][0], VOCAB, out_seq_len[b][0])


def test_beam_search_decoder_1():
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK)
    beam_result, _, _, out_seq_len = decoder.decode(torch.FloatTensor([PROBS_SEQ1]))
    assert best(beam_result, out_seq_len) == BEAM_SEARCH_RESULT[0]


def test_beam_search_decoder_2():
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK)
    beam_result, _, _, out_seq_len = decoder.decode(torch.FloatTensor([PROBS_SEQ2]))
    assert best(beam_result, out_seq_len) == BEAM_SEARCH_RESULT[1]


def test_beam_search_decoder_3():
    # a word LM at alpha = beta = 0 still keeps the beams on words it knows: here only "a"
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, model_path=LM_PATH)
    beam_result, _, _, out_seq_len = decoder.decode(torch.FloatTensor([PROBS_SEQ2]))
    assert best(beam_result, out_seq_len) == BEAM_SEARCH_RESULT[2]


def test_beam_search_decoder_batch():
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, num_processes=24)
    beam_results, _, _, out_seq_len = decoder.decode(torch.FloatTensor([PROBS_SEQ1, PROBS_SEQ2]))
    assert best(beam_results, out_seq_len, 0) == BEAM_SEARCH_RESULT[0]
    assert best(beam_results, out_seq_len, 1) == BEAM_SEARCH_RESULT[1]


def test_beam_search_decoder_batch_log():
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                             num_processes=24)
    beam_results, _, _, out_seq_len = decoder.decode(torch.FloatTensor([PROBS_SEQ1, PROBS_SEQ2]).log())
    assert best(beam_results, out_seq_len, 0) == BEAM_SEARCH_RESULT[0]
    assert best(beam_results, out_seq_len, 1) == BEAM_SEARCH_RESULT[1]


def test_online_decoder_decoding():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                                   num_processes=24, model_path=LM_PATH)
    state1, state2 = DecoderState(decoder), DecoderState(decoder)
    probs_seq = torch.FloatTensor([PROBS_SEQ2, PROBS_SEQ2]).log()
    is_eos_s = [True for _ in range(len(probs_seq))]
    beam_results, _, _, out_seq_len = decoder.decode(probs_seq, [state1, state2], is_eos_s)
    assert best(beam_results, out_seq_len, 0) == BEAM_SEARCH_RESULT[2]
    assert best(beam_results, out_seq_len, 1) == BEAM_SEARCH_RESULT[2]


def test_online_decoder_decoding_no_lm():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                                   num_processes=24)
    state1, state2 = DecoderState(decoder), DecoderState(decoder)
    probs_seq = torch.FloatTensor([PROBS_SEQ1, PROBS_SEQ2]).log()
    beam_results, _, _, out_seq_len = decoder.decode(probs_seq, [state1, state2], [True, True])
    assert best(beam_results, out_seq_len, 0) == BEAM_SEARCH_RESULT[0]
    assert best(beam_results, out_seq_len, 1) == BEAM_SEARCH_RESULT[1]


def test_online_decoder_decoding_with_two_calls():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                                   num_processes=24, model_path=LM_PATH)
    state1 = DecoderState(decoder)
    probs_seq = torch.FloatTensor([PROBS_SEQ2]).log()
    decoder.decode(probs_seq[:, :2], [state1], [False])
    beam_results, _, _, out_seq_len = decoder.decode(probs_seq[:, 2:], [state1], [True])
    assert best(beam_results, out_seq_len) == BEAM_SEARCH_RESULT[2]


def test_online_decoder_decoding_with_two_calls_no_lm():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                                   num_processes=24)
    state1, state2 = DecoderState(decoder), DecoderState(decoder)
    probs_seq = torch.FloatTensor([PROBS_SEQ1, PROBS_SEQ2]).log()
    decoder.decode(probs_seq[:, :2], [state1, state2], [False, False])
    beam_results, _, _, out_seq_len = decoder.decode(probs_seq[:, 2:], [state1, state2], [True, True])
    del state1, state2
    assert best(beam_results, out_seq_len, 0) == BEAM_SEARCH_RESULT[0]
    assert best(beam_results, out_seq_len, 1) == BEAM_SEARCH_RESULT[1]


def test_online_decoder_decoding_with_a_lot_calls_no_lm_check_size():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM_SIZE, blank_id=BLANK, log_probs_input=True,
                                   num_processes=24)
    state1 = DecoderState(decoder)
    probs_seq = torch.FloatTensor([PROBS_SEQ1]).log()
    for _ in range(1000):
        decoder.decode(probs_seq, [state1], [False, False])
    beam_results, _, _, out_seq_len = decoder.decode(probs_seq, [state1], [True, True])
    del state1
    assert beam_results.shape[2] >= out_seq_len.max()
