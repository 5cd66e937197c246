"""Corpus preparation: one module per corpus turns its raw layout into Kaldi data dirs + manifests.

    python -m data_prep.fsdd  [--corpus-dir DIR] [--download] OUT_DIR
    python -m data_prep.yesno [--corpus-dir DIR] [--download] OUT_DIR

Nothing here knows about models; nothing in `asr/` knows about a particular corpus.
"""
