"""Built-in baseline training scripts."""
from pathlib import Path

BASELINE = Path(__file__).with_name("train.py")
