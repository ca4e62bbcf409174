"""Evaluation: the shapes-world compositional judge and the digits classifier."""
from mmgen.eval.digits_classifier import DigitsClassifier
from mmgen.eval.judge import Detection, JudgeResult, detect, judge, judge_batch

__all__ = ["DigitsClassifier", "Detection", "JudgeResult", "detect", "judge", "judge_batch"]
