"""Official checkpoints -> mmgen modules (state-dict conversion; see ``tokenizers.py``)."""
