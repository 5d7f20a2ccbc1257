"""Data: metadata.csv + audio -> upstream's prepared format (prepare), tokens and vocabularies
(tokenizer), and the training-side dataset, frame batching and collation (dataset).

Import the submodules directly; this package imports nothing heavy on its own.
"""
