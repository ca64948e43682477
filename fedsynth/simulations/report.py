"""Moved to `fedsynth.evaluation.comparison`; kept only for `fedsynth/cli.py` until the CLI
package imports from there."""

from fedsynth.evaluation.comparison import comparison_markdown, comparison_table

__all__ = ["comparison_markdown", "comparison_table"]
