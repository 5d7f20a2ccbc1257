"""Speech models and transcript rules shared by data preparation, evaluation and serving: the ASR
(``asr=`` group, a registry like the vocoders'), the speaker embedders (``speaker=``) and how a
transcript is compared with a text (normalisation, WER, CER). Below data/ and evaluation/, so
both import it and neither imports the other.
"""
